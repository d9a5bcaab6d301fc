"""Operators for the solvers: the shared base, explicit matrices, scipy operators, ``as_operator``.

An *operator* is anything with ``n``, ``dtype``, ``device`` and ``matmat(V[n, b]) -> [n, b]``
(:class:`~hessian_powerlaw.protocols.Operator`); ``matvec(v)`` is ``matmat(v[:, None])[:, 0]``.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.protocols import Operator, OperatorLike

__all__ = ["MatrixOperator", "OperatorBase", "ScipyOperator", "as_operator", "check_float_dtype"]


class OperatorBase(abc.ABC):
    """Shared members of the operators: ``matvec``, counters, ``to_scipy``.

    Subclasses set ``n``, ``dtype``, ``device`` and implement ``_apply(V) -> H V`` on a
    validated ``(n, b)`` tensor already in the operator's dtype and device.
    """

    n: int
    dtype: torch.dtype
    device: torch.device

    def __init__(self) -> None:
        self.num_matvecs = 0  # columns multiplied so far
        self.seconds = 0.0  # wall time spent in products

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.n, self.n)

    def matmat(self, V: Tensor) -> Tensor:
        """``H @ V`` for ``V`` of shape ``(n, b)``; the result has the operator's dtype."""
        V = self._check_block(V)
        start = time.perf_counter()
        out = self._apply(V) if V.shape[1] > 0 else V.clone()
        self.seconds += time.perf_counter() - start
        self.num_matvecs += V.shape[1]
        return out

    def matvec(self, v: Tensor) -> Tensor:
        """``H @ v`` for ``v`` of shape ``(n,)``."""
        v = torch.as_tensor(v)
        if v.ndim != 1:
            raise UserInputError(
                f"matvec expects a vector of shape ({self.n},), got {tuple(v.shape)}"
            )
        return self.matmat(v[:, None])[:, 0]

    def __matmul__(self, other: Tensor) -> Tensor:
        other = torch.as_tensor(other)
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` that calls this operator (numpy in and out).

        Its dtype is float64 (float32 for a float32 operator); inputs are cast to the
        operator's dtype, so scipy solvers see exactly the products the solvers here see.
        """
        from scipy.sparse.linalg import LinearOperator

        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64

        def _mm(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X)
            X2 = X.reshape(self.n, -1)
            T = torch.as_tensor(np.ascontiguousarray(X2), device=self.device).to(self.dtype)
            Y = self.matmat(T).detach().cpu().numpy().astype(np_dtype, copy=False)
            return Y.reshape(X.shape)

        return LinearOperator(
            shape=(self.n, self.n), matvec=_mm, matmat=_mm, rmatvec=_mm, rmatmat=_mm, dtype=np_dtype
        )

    def _check_block(self, V: Tensor) -> Tensor:
        V = torch.as_tensor(V)
        if V.ndim != 2 or V.shape[0] != self.n:
            raise UserInputError(
                f"matmat expects a block of shape ({self.n}, b), got {tuple(V.shape)}; "
                "pass vectors as the columns of V"
            )
        return V.to(device=self.device, dtype=self.dtype)

    @abc.abstractmethod
    def _apply(self, V: Tensor) -> Tensor:
        """``H V`` for a block already checked by :meth:`_check_block`."""


class MatrixOperator(OperatorBase):
    """An explicit symmetric matrix as an operator (tests, synthetic spectra, user matrices).

    Symmetry is checked to ``sqrt(eps) * max|A|`` and the matrix is then symmetrized exactly,
    ``(A + A^T) / 2``.

    Args:
        A: a torch tensor or anything ``numpy.asarray`` accepts.
        dtype: float64 or float32; default ``A``'s floating dtype (float64 for integer input).
        device: where the products run; default ``A``'s device.

    Raises:
        UserInputError: a matrix that is not square, finite and symmetric.
    """

    def __init__(
        self,
        A: Tensor | np.ndarray | Sequence[Sequence[float]],
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        T = A if isinstance(A, Tensor) else torch.as_tensor(np.asarray(A))
        T = T.detach()
        if dtype is None:
            dtype = T.dtype if T.is_floating_point() else torch.float64
        check_float_dtype(dtype)
        T = T.to(device=device if device is not None else T.device, dtype=dtype)
        if T.ndim != 2 or T.shape[0] != T.shape[1]:
            raise UserInputError(
                f"MatrixOperator needs a square matrix, got shape {tuple(T.shape)}"
            )
        if not bool(torch.isfinite(T).all()):
            raise UserInputError("MatrixOperator: the matrix has NaN or infinite entries")
        scale = float(T.abs().max()) if T.numel() else 0.0
        asym = float((T - T.T).abs().max()) if T.numel() else 0.0
        if asym > math.sqrt(torch.finfo(dtype).eps) * max(scale, 1e-300):
            raise UserInputError(
                f"MatrixOperator needs a symmetric matrix; max |A - A^T| = {asym:.3g} "
                f"(max |A| = {scale:.3g}); pass (A + A.T) / 2"
            )
        self.matrix = (T + T.T) / 2
        self.n = int(T.shape[0])
        self.dtype = dtype
        self.device = T.device

    def _apply(self, V: Tensor) -> Tensor:
        return self.matrix @ V

    def __repr__(self) -> str:
        return f"MatrixOperator(n={self.n}, dtype={self.dtype}, device={self.device})"


class ScipyOperator(OperatorBase):
    """A ``scipy.sparse.linalg.LinearOperator`` (or sparse matrix) as an operator, on the CPU.

    Products go through numpy in float64 (float32 when the scipy operator is float32).
    Symmetry is the caller's promise; :func:`as_operator` probes it once.
    """

    def __init__(self, A: Any) -> None:
        super().__init__()
        from scipy.sparse.linalg import aslinearoperator

        self.linear_operator = aslinearoperator(A)
        rows, cols = self.linear_operator.shape
        if rows != cols:
            raise UserInputError(f"a linear operator must be square, got shape {(rows, cols)}")
        self.n = int(rows)
        single = np.dtype(self.linear_operator.dtype) == np.float32
        self.dtype = torch.float32 if single else torch.float64
        self.device = torch.device("cpu")

    def _apply(self, V: Tensor) -> Tensor:
        out = np.asarray(self.linear_operator.matmat(V.numpy())).reshape(self.n, -1)
        if np.iscomplexobj(out):
            raise UserInputError("the linear operator returned complex values; pass a real one")
        return torch.as_tensor(np.ascontiguousarray(out)).to(self.dtype)

    def __repr__(self) -> str:
        return f"ScipyOperator(n={self.n}, dtype={self.dtype})"


_OPERATOR_HELP = (
    "an operator is an object with n, dtype, device and matmat (n: its size; dtype: "
    "torch.float64 or torch.float32; matmat(V: Tensor[n, b]) -> Tensor[n, b]), such as "
    "HessianOperator or MatrixOperator; a symmetric matrix (numpy array, torch tensor, nested "
    "list) or a scipy LinearOperator is wrapped into one"
)


def _is_operator(obj: Any) -> bool:
    return isinstance(obj, Operator) and callable(getattr(obj, "matmat", None))


def as_operator(obj: OperatorLike | Any) -> Operator:
    """``obj`` as an operator for the solvers, as ``scipy.sparse.linalg.aslinearoperator``.

    - an operator (``n``, ``dtype``, ``device``, ``matmat``) is returned as it is;
    - a scipy ``LinearOperator`` or sparse matrix becomes a :class:`ScipyOperator`, after one
      probe of its symmetry: ``|u^T A w - w^T A u|`` must be at most ``sqrt(eps)`` (1.5e-8
      in float64) times ``||u|| (||A w|| + ||A u||)`` for two random vectors (2 products,
      not counted in ``num_matvecs``);
    - a torch tensor, numpy array or nested list becomes a :class:`MatrixOperator`, which
      checks that it is square, finite and symmetric.

    Args:
        obj: an operator, a matrix or a scipy linear operator.

    Returns:
        The operator.

    Raises:
        UserInputError: anything else, with what an operator is.
    """
    if _is_operator(obj):
        return obj
    try:
        from scipy import sparse
        from scipy.sparse.linalg import LinearOperator
    except ImportError:  # pragma: no cover - scipy is a dependency
        sparse = LinearOperator = None
    if LinearOperator is not None and (isinstance(obj, LinearOperator) or sparse.issparse(obj)):
        op = ScipyOperator(obj)
        _check_symmetric_probe(op)
        return op
    if isinstance(obj, Tensor):
        matrix: Any = obj
    else:
        try:
            matrix = np.asarray(obj)
        except (ValueError, TypeError):  # ragged nested lists
            matrix = None
        if matrix is None or matrix.dtype.kind not in "biuf":
            raise UserInputError(
                f"expected an operator, got {type(obj).__name__}; {_OPERATOR_HELP}"
            )
    if matrix.ndim != 2:
        raise UserInputError(
            f"expected an operator, got a {type(obj).__name__} of shape {tuple(matrix.shape)}; "
            f"{_OPERATOR_HELP}"
        )
    return MatrixOperator(matrix)


def _check_symmetric_probe(op: ScipyOperator) -> None:
    gen = torch.Generator().manual_seed(0)
    U = torch.randn(op.n, 2, generator=gen, dtype=torch.float64).to(op.dtype)
    AU = op._apply(U)
    u, w, Au, Aw = U[:, 0], U[:, 1], AU[:, 0], AU[:, 1]
    asym = abs(float(u @ Aw - w @ Au))
    scale = float(torch.linalg.vector_norm(u)) * float(
        torch.linalg.vector_norm(Aw) + torch.linalg.vector_norm(Au)
    )
    if not asym <= math.sqrt(torch.finfo(op.dtype).eps) * scale:
        raise UserInputError(
            f"the solvers need a symmetric operator, but for random u, w the linear operator "
            f"gives u^T A w - w^T A u = {asym:.3g} (scale {scale:.3g}); pass (A + A^T) / 2"
        )


def check_float_dtype(dtype: Any) -> None:
    """Refuse a dtype other than float64 and float32."""
    if dtype not in (torch.float32, torch.float64):
        raise UserInputError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
