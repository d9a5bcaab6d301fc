"""Every setting of a Hessian analysis in one validated, frozen object: :class:`AnalysisOptions`.

The command line builds it from its flags (:meth:`AnalysisOptions.from_args`), and it travels
unchanged through :func:`~hessian_powerlaw.analysis.analyze`,
:func:`~hessian_powerlaw.analysis.analyze_spec`, :func:`~hessian_powerlaw.tracking.track_run`,
:func:`~hessian_powerlaw.theory.subspace_stability`, the training-loop hook and the
experiment runner; every result records it (:meth:`AnalysisOptions.to_dict`) in its JSON.

Each field says where it goes in its metadata: ``"solver"`` fields are the keyword arguments
of :func:`~hessian_powerlaw.solvers.top_eigenpairs` (:meth:`AnalysisOptions.solver_kwargs`),
``"operator"`` fields those of :class:`~hessian_powerlaw.operators.HessianOperator`
(:meth:`AnalysisOptions.operator_kwargs`), ``"data"`` fields say which samples form the
Hessian batches; the rest set the statistics (fit, trace, density). A new option is one field
here (with its check in ``__post_init__`` when it needs one) and one flag in
``cli/_common.add_analysis_arguments`` whose ``dest`` is the field's name.

torch is imported only where a ``torch.dtype`` is needed, so the command line starts fast.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hessian_powerlaw.criteria import CRITERIA, DEFAULT_CRITERION
from hessian_powerlaw.errors import UserInputError, check_int

if TYPE_CHECKING:
    import argparse

    import torch

__all__ = [
    "DTYPE_NAMES",
    "WHICH",
    "AnalysisOptions",
    "dtype_name",
    "parse_dtype",
    "spectrum_dtype",
]

#: The product dtypes an analysis may use, by name.
DTYPE_NAMES: tuple[str, ...] = ("float64", "float32")
#: Which end of the spectrum the eigensolver finds (``top_eigenpairs(which=...)``).
WHICH: tuple[str, ...] = ("largest", "smallest", "both")

# where a field goes: the metadata of its dataclass field
_SOLVER = {"to": "solver"}
_OPERATOR = {"to": "operator"}
_DATA = {"to": "data"}


def spectrum_dtype(device: Any) -> str:
    """The products' dtype of ``spectrum`` when none is asked for: by where they run.

    float32 on a CPU: on the paper-scale benchmark (LeNet on Fashion-MNIST) every eigenvalue
    of K = 300 was within 1.5e-6 of the float64 run's, s and d_ks agreed to 6 digits, and the
    solve took 192 s against 533 s. float64 on a GPU: there float32 products of LeNet through
    cuDNN's convolutions differed from float64 ones by 2.6e-4 relative even with TF32 off,
    so K = 1000 did not converge in 20,320 float32 products, while float64 took 3,552
    products and 25 s on an H200 (docs/benchmarks.md, "On a GPU").

    Args:
        device: the ``--device`` given (``None``: where the model is, the CPU).

    Returns:
        ``"float32"`` or ``"float64"``.
    """
    return "float32" if str(device or "cpu").split(":")[0] == "cpu" else "float64"


def dtype_name(dtype: Any) -> str:
    """``"float64"`` for ``torch.float64`` or ``"float64"``; the name as the JSON records it.

    Args:
        dtype: a ``torch.dtype`` or its name.

    Returns:
        The name without the ``torch.`` prefix.
    """
    return str(dtype).removeprefix("torch.")


def parse_dtype(dtype: Any) -> torch.dtype:
    """The ``torch.dtype`` of a product dtype given by name or as a dtype.

    Args:
        dtype: ``"float64"``, ``"float32"``, ``torch.float64`` or ``torch.float32``.

    Returns:
        The torch dtype.

    Raises:
        UserInputError: any other dtype.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float64, torch.float32):
            raise UserInputError(f"dtype must be float64 or float32, got {dtype}")
        return dtype
    if dtype not in DTYPE_NAMES:
        raise UserInputError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {dtype!r}")
    return getattr(torch, dtype)


@dataclass(frozen=True)
class AnalysisOptions:
    """How a Hessian is analysed: the eigensolve, the products, the samples and the statistics.

    Every value is checked once, when the object is made; a mistake is a
    :class:`~hessian_powerlaw.errors.UserInputError` naming the option.

    Attributes:
        k: the number of top eigenpairs.
        tol: the eigensolver's tolerance under ``criterion``; ``None``: its default
            (:func:`~hessian_powerlaw.solvers.default_tol`).
        criterion: ``"relative"`` (each eigenvalue to ``tol`` relative accuracy) or
            ``"norm"`` (residuals relative to ``|lambda_1|``).
        which: ``"largest"``, ``"smallest"`` or ``"both"`` ends of the spectrum.
        block_size: columns per product; ``None``: the solver's default.
        basis_size: basis columns before a thick restart; ``None``: the solver's default.
        max_matvecs: cap on Hessian-vector products of the eigensolve; ``None``: the solver's.
        seed: seed of the random start block, the trace probes, the bootstrap and the
            Hessian samples.
        memory_budget: bytes (or a size such as ``"4GiB"``) the eigensolver's storage may
            take; ``None``: half the free memory of the device. Decides between the basis
            with its products, the basis alone and a smaller basis (see
            :mod:`hessian_powerlaw.solvers.memory`).
        dtype: product precision, ``"float64"`` or ``"float32"`` (a ``torch.dtype`` is
            accepted and stored by name).
        samples: training samples in the Hessian; ``None``: all of a small set, a fixed
            subset of a large one (used where data is loaded from a spec or a run).
        batch_size: the Hessian samples are applied in batches of this size; ``None``: one.
        trace_matvecs: products of the Hutch++ trace estimate; 0 skips it, else >= 6.
        density: also estimate the spectral density (stochastic Lanczos quadrature).
        density_probes: probe vectors of the density estimate.
        lanczos_steps: Lanczos steps per density probe.
        alpha: significance level of the paper's KS power-law test.
        n_boot: bootstrap samples of the calibrated goodness-of-fit p-value; 0 skips it.
        alternatives: likelihood-ratio tests of the power law against other laws.
    """

    k: int = field(default=100, metadata=_SOLVER)
    tol: float | None = field(default=None, metadata=_SOLVER)
    criterion: str = field(default=DEFAULT_CRITERION, metadata=_SOLVER)
    which: str = field(default="largest", metadata=_SOLVER)
    block_size: int | None = field(default=None, metadata=_SOLVER)
    basis_size: int | None = field(default=None, metadata=_SOLVER)
    max_matvecs: int | None = field(default=None, metadata=_SOLVER)
    seed: int = field(default=0, metadata=_SOLVER)
    memory_budget: int | str | None = field(default=None, metadata=_SOLVER)
    dtype: str = field(default="float64", metadata=_OPERATOR)
    samples: int | None = field(default=None, metadata=_DATA)
    batch_size: int | None = field(default=None, metadata=_DATA)
    trace_matvecs: int = 100
    density: bool = False
    density_probes: int = 4
    lanczos_steps: int = 80
    alpha: float = 0.05
    n_boot: int = 1000
    alternatives: bool = True

    def __post_init__(self) -> None:
        """Check every value and normalise ``dtype`` to its name, ``criterion=None``."""
        set_ = object.__setattr__
        set_(self, "dtype", dtype_name(self.dtype))
        if self.dtype not in DTYPE_NAMES:
            raise UserInputError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {self.dtype!r}")
        if self.criterion is None:
            set_(self, "criterion", DEFAULT_CRITERION)
        if self.criterion not in CRITERIA:
            raise UserInputError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.which not in WHICH:
            raise UserInputError(f"which must be one of {WHICH}, got {self.which!r}")
        check_int(self.k, "k")
        check_int(self.trace_matvecs, "trace_matvecs", minimum=0)
        if 0 < self.trace_matvecs < 6:
            raise UserInputError(
                f"trace_matvecs must be 0 (no trace) or >= 6 (Hutch++), got {self.trace_matvecs}"
            )
        tol = self.tol
        if tol is not None and not (
            isinstance(tol, numbers.Real) and not isinstance(tol, bool) and 0 < tol < 1
        ):
            raise UserInputError(f"tol must be a number in (0, 1), e.g. 1e-6; got {tol!r}")
        alpha = self.alpha
        if not (isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and 0 < alpha < 1):
            raise UserInputError(
                f"alpha must be a significance level in (0, 1), e.g. 0.05; got {alpha!r}"
            )
        check_int(self.n_boot, "n_boot", minimum=0)
        check_int(self.density_probes, "density_probes")
        check_int(self.lanczos_steps, "lanczos_steps")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise UserInputError(f"seed must be an integer, got {self.seed!r}")
        set_(self, "seed", int(self.seed))
        for name in ("block_size", "basis_size", "max_matvecs", "samples", "batch_size"):
            value = getattr(self, name)
            if value is not None:
                check_int(value, name)
        for name in ("density", "alternatives"):
            set_(self, name, bool(getattr(self, name)))
        if self.memory_budget is not None:  # a size such as "4GiB" is kept as bytes
            from hessian_powerlaw.solvers.memory import parse_bytes

            set_(self, "memory_budget", parse_bytes(self.memory_budget))

    # ------------------------------------------------------------------ building

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in field order.

        Returns:
            The names of the fields.
        """
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of(
        cls,
        options: AnalysisOptions | None = None,
        /,
        defaults: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> AnalysisOptions:
        """``options`` with ``changes``; without ``options``, ``defaults`` with ``changes``.

        This is how the functions that take keyword options (``analyze(model, loss, batches,
        k=30)``) turn them into one object.

        Args:
            options: the options to start from, or ``None``.
            defaults: the caller's own defaults, used only when ``options`` is ``None``
                (e.g. the training-loop hook's float32).
            **changes: option values that replace those of ``options`` or ``defaults``.

        Returns:
            The validated options.

        Raises:
            UserInputError: an unknown option name or an invalid value.
        """
        _check_names(changes)
        if options is None:
            _check_names(defaults or {})
            return cls(**{**dict(defaults or {}), **changes})
        if not isinstance(options, AnalysisOptions):
            raise UserInputError(
                f"options must be an AnalysisOptions, got {type(options).__name__}"
            )
        return options.replace(**changes) if changes else options

    @classmethod
    def from_args(cls, args: argparse.Namespace, **changes: Any) -> AnalysisOptions:
        """The options a sub-command's parsed flags give.

        The options a sub-command's parsed flags give: every flag whose ``dest`` is an
        option's name; options a command has no flag for keep their defaults. A ``dtype``
        flag left at ``None`` (``spectrum``'s) is :func:`spectrum_dtype` of ``args.device``,
        or float64 when a memory budget is given (it may leave the eigenvalues-only mode,
        whose bounds need float64 products).

        Args:
            args: the parsed command line.
            **changes: values that the command sets itself.

        Returns:
            The validated options.
        """
        given = {name: getattr(args, name) for name in cls.names() if hasattr(args, name)}
        if "dtype" in given and given["dtype"] is None:
            # a memory budget may leave the eigenvalues-only mode, which needs float64
            device = getattr(args, "device", None)
            budgeted = given.get("memory_budget") is not None
            given["dtype"] = "float64" if budgeted else spectrum_dtype(device)
        return cls(**{**given, **changes})

    def replace(self, **changes: Any) -> AnalysisOptions:
        """A copy with ``changes``, validated again.

        Args:
            **changes: option values.

        Returns:
            The new options.

        Raises:
            UserInputError: an unknown option name or an invalid value.
        """
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ using

    @property
    def torch_dtype(self) -> torch.dtype:
        """The product dtype as a ``torch.dtype``."""
        return parse_dtype(self.dtype)

    def solver_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The keyword arguments of :func:`~hessian_powerlaw.solvers.top_eigenpairs`.

        Args:
            **overrides: values a caller fixes itself (e.g. ``criterion="norm"``).

        Returns:
            Every ``"solver"`` field by name, with ``overrides``.
        """
        return {**self._fields_for("solver"), **overrides}

    def operator_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~hessian_powerlaw.operators.HessianOperator`.

        Returns:
            Every ``"operator"`` field by name, ``dtype`` as a ``torch.dtype``.
        """
        return {**self._fields_for("operator"), "dtype": self.torch_dtype}

    def resolved_tol(self) -> float:
        """``tol``, or the solver's default for ``dtype`` and ``criterion`` when it is ``None``.

        Returns:
            The tolerance the eigensolve uses.
        """
        if self.tol is not None:
            return float(self.tol)
        from hessian_powerlaw.solvers import default_tol

        return default_tol(self.torch_dtype, self.criterion)

    def to_dict(self) -> dict[str, Any]:
        """Every option by name, as the JSON results record them.

        Returns:
            A dict of plain values.
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _fields_for(self, target: str) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("to") == target
        }


def _check_names(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(AnalysisOptions.names()))
    if unknown:
        raise UserInputError(
            f"unknown option(s) {', '.join(unknown)}; the analysis options are "
            f"{', '.join(AnalysisOptions.names())}"
        )
