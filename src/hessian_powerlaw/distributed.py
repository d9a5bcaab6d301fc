"""Data-parallel Hessian products on ``torch.distributed`` (one process per rank, ``torchrun``).

The operator is the Hessian of the *sample-weighted mean* loss over all Hessian batches,

    H = (1/N) sum_b n_b H_b,        N = sum_b n_b,

where ``H_b`` is the Hessian of the mean loss on batch ``b`` of ``n_b`` samples. A sum splits
over any partition of the batches, so with ``W`` ranks each rank ``r`` keeps the batches of its
shard ``S_r`` (:func:`shard`), computes ``P_r = sum_{b in S_r} n_b H_b V`` and its count
``N_r = sum_{b in S_r} n_b``, and one all-reduce (sum) per ``matmat`` call gives every rank

    H V = (sum_r P_r) / (sum_r N_r),

the same product as one process holding all the batches (up to the order of floating-point
additions). Every rank runs the same solver on the same vectors, so ranks meet only inside
that all-reduce.

Second-order autograd products do not go through DistributedDataParallel's gradient hooks, so
the reduction is explicit (:func:`all_reduce_sum`) and a DDP-wrapped model is unwrapped
(:func:`unwrap_model`).

Failures are bounded in time, never a hang:

- a rank that raises announces ``rank r: <error>`` in the process group's key-value store
  (:func:`failure_guard`) before it exits; the other ranks' next collective fails as soon as
  its connection closes (or ``torchrun`` stops them), and their :class:`DistributedError`
  names the failing rank;
- a rank that hangs or dies silently makes the others fail after the process group's
  ``timeout`` (:func:`init_from_env`); ``torchrun`` also stops all workers when one exits
  with an error and prints which rank it was;
- ranks that disagree on the configuration (:func:`check_consistent`) or on the vectors
  given to a product (:func:`all_reduce_sum` with ``identical=``) all raise one clear error.

Without an initialised process group (or with one rank) every helper is the identity, so the
library runs unchanged in a single process.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from hessian_powerlaw import batching
from hessian_powerlaw.batching import sample_count
from hessian_powerlaw.errors import UserInputError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistributedError",
    "InconsistentRanksError",
    "all_reduce_sum",
    "broadcast",
    "check_consistent",
    "failure_guard",
    "init_from_env",
    "is_initialized",
    "is_primary",
    "launched_by_torchrun",
    "rank",
    "report_peer_failure",
    "fingerprint",
    "shard",
    "shard_checked",
    "shutdown",
    "unwrap_model",
    "world_size",
]

# How long a collective may wait for the other ranks before it fails (seconds). One matmat is
# the longest stretch between collectives, so this only needs to exceed the slowest product.
DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "HESSIAN_POWERLAW_DIST_TIMEOUT"
# How long a rank stopped by another rank's failure waits before exiting under torchrun.
LINGER_S = 5.0

# Environment that torchrun (and any env:// launcher) sets for every worker.
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# Keys in the process group's store where failing ranks announce themselves.
_FAIL_COUNT_KEY = "hessian_powerlaw/failures"
_FAIL_KEY = "hessian_powerlaw/failure/{}"


class DistributedError(RuntimeError):
    """A rank could not finish because another rank failed, hung or disagreed.

    The message names this rank and, when known, the rank that failed first and its error.
    """


class InconsistentRanksError(UserInputError):
    """Ranks were given different configurations; raised identically on every rank."""


# ---------------------------------------------------------------------------------------------
# who am I


def is_initialized() -> bool:
    """True when a default ``torch.distributed`` process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group (0 without a group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of ranks in the default group (1 without a group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_primary() -> bool:
    """True on rank 0 (and in a single process): the rank that prints and writes files."""
    return rank() == 0


def _active() -> bool:
    """True when there is more than one rank to talk to."""
    return world_size() > 1


def _where() -> str:
    return f"rank {rank()} of {world_size()}"


# ---------------------------------------------------------------------------------------------
# start and stop


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """True when the env:// variables of a launcher (``torchrun``) are all set."""
    env = os.environ if environ is None else environ
    return all(env.get(name) for name in _LAUNCH_ENV)


def default_timeout() -> float:
    """The collective timeout in seconds: ``$HESSIAN_POWERLAW_DIST_TIMEOUT`` or 600."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise UserInputError(
            f"{TIMEOUT_ENV}={raw!r} is not a number; set it to a timeout in seconds, e.g. 600"
        ) from None
    _check_timeout(value, TIMEOUT_ENV)
    return value


def _check_timeout(timeout: float, name: str) -> None:
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise UserInputError(f"{name} must be a positive number of seconds, got {timeout!r}")


def choose_backend() -> str:
    """``gloo`` on CPU; ``cpu:gloo,cuda:nccl`` when CUDA is available.

    The mixed backend sends CUDA tensors through NCCL and CPU tensors (configuration checks,
    a CPU model on a GPU machine) through gloo, so every helper works whatever the device.
    """
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_from_env(timeout: float | None = None) -> bool:
    """Initialise the default process group from the launcher's environment.

    Does nothing (returns False) when the group already exists or when the env://
    variables ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` are not all set.
    On a GPU machine each rank uses the GPU ``LOCAL_RANK`` (modulo the GPU count).

    ``timeout`` (seconds; default :func:`default_timeout`) bounds how long any collective
    waits for the other ranks: a rank that hangs makes the others fail after that time.
    Returns True when this call created the group.
    """
    timeout = default_timeout() if timeout is None else timeout
    _check_timeout(timeout, "timeout")
    if is_initialized() or not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise UserInputError(
            "this PyTorch build has no torch.distributed; run without torchrun or install a "
            "PyTorch build with distributed support"
        )
    backend = choose_backend()
    if "nccl" in backend:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group(
        backend=backend, init_method="env://", timeout=timedelta(seconds=timeout)
    )
    return True


def shutdown(synchronize: bool = False) -> None:
    """Destroy the default process group if there is one (idempotent).

    ``synchronize=True`` (the normal end of a run) first waits at a barrier, so that no rank
    tears its connections down while another still talks to it. Leave it False when
    stopping on an error: the other ranks may be inside another collective.
    """
    if not is_initialized():
        return
    if synchronize and _active():
        _collective("barrier", dist.barrier)
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# collectives


def _collective(name: str, fn: Callable[[], Any]) -> Any:
    """Run one collective; turn a transport failure into a DistributedError naming the cause."""
    try:
        return fn()
    except (RuntimeError, OSError) as exc:
        if isinstance(exc, DistributedError):
            raise
        raise DistributedError(f"{_where()}: {name} failed because {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """The first failure announced by any rank, else a description of ``exc``."""
    announced = _first_announced_failure()
    if announced is not None:
        return announced
    return (
        "another rank stopped or did not answer in time (see the other ranks' output; "
        f"torchrun names the rank that exited first): {type(exc).__name__}: {exc}"
    )


def _device_for(tensor: torch.Tensor) -> torch.device:
    """Where the backend can reduce ``tensor``: NCCL-only groups need a CUDA tensor."""
    if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum(tensor: torch.Tensor, *, identical: torch.Tensor | None = None) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place where possible) and return the result.

    ``identical``: a tensor that must be the same on every rank (the block ``V`` of a
    product). A weighted checksum of each of its columns travels in the same all-reduce; a
    rank whose checksum differs from the mean raises :class:`DistributedError`, so ranks whose
    solvers drifted apart fail loudly instead of mixing products of different vectors.
    Identity without a process group.
    """
    if not _active():
        return tensor
    payload = tensor.reshape(-1)
    checks = None
    if identical is not None:
        checks = _checksums(identical).to(dtype=payload.dtype, device=payload.device)
        payload = torch.cat([payload, checks])
    device = _device_for(payload)
    buffer = payload.to(device).contiguous()
    _collective("all_reduce", lambda: dist.all_reduce(buffer, op=dist.ReduceOp.SUM))
    buffer = buffer.to(tensor.device)
    if checks is not None:
        _verify_checksums(checks, buffer[-checks.numel() :], identical.shape, world_size())
        buffer = buffer[: -checks.numel()]
    return buffer.reshape(tensor.shape)


def _checksums(block: torch.Tensor) -> torch.Tensor:
    """Per column of ``block`` (a vector is one column): sum_i w_i |.| and sum_i w_i x_i.

    The weights ``w_i = 1 + cos(i)`` are fixed and uneven so that permuted or shifted
    entries change the sum; the absolute sum sets the scale of rounding.
    """
    cols = block.detach().reshape(block.shape[0], -1).to(torch.float64)
    w = 1.0 + torch.cos(torch.arange(cols.shape[0], dtype=torch.float64, device=cols.device))
    weighted = w[:, None] * cols
    return torch.cat([weighted.abs().sum(0), weighted.sum(0)])


def _verify_checksums(
    local: torch.Tensor, total: torch.Tensor, shape: tuple[int, ...], world: int
) -> None:
    """Every rank's checksum must equal the mean over ranks, up to the reduction's rounding.

    ``local`` = this rank's :func:`_checksums` ``[scale, sum]``, ``total`` = their sum over the
    ``world`` ranks.
    """
    half = local.numel() // 2
    scale, mine, summed = local[:half], local[half:], total[half:]
    eps = torch.finfo(total.dtype).eps
    # identical inputs differ only by the rounding of a W-term sum of W equal values
    tol = 4.0 * world * world * eps * (scale + torch.finfo(total.dtype).tiny)
    bad = (summed / world - mine).abs() > tol
    if bool(bad.any()):
        col = int(torch.nonzero(bad)[0])
        raise DistributedError(
            f"{_where()}: the vectors given to the Hessian product differ between ranks "
            f"(column {col}: checksum {float(mine[col]):.17g} here, mean over ranks "
            f"{float(summed[col] / world):.17g}); every rank must run the solver with the "
            f"same seed, options and hardware (block shape {tuple(shape)})"
        )


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Copy ``tensor`` from rank ``src`` to every rank and return it (identity alone)."""
    if not _active():
        return tensor
    if not 0 <= src < world_size():
        raise UserInputError(f"src must be a rank in [0, {world_size()}), got {src}")
    device = _device_for(tensor)
    buffer = tensor.detach().to(device).contiguous().clone()
    _collective("broadcast", lambda: dist.broadcast(buffer, src=src))
    return buffer.to(tensor.device).reshape(tensor.shape)


def _all_gather_objects(value: Any) -> list[Any]:
    gathered: list[Any] = [None] * world_size()
    _collective("all_gather_object", lambda: dist.all_gather_object(gathered, value))
    return gathered


def check_consistent(**values: Any) -> None:
    """All ranks must pass equal ``values`` (parameter count, data size, k, seed, ...).

    One collective gathers every rank's values; on any difference *every* rank raises the
    same :class:`InconsistentRanksError` (a UserInputError), naming the value and what each
    rank had. No-op without a process group.
    """
    if not _active():
        return
    gathered = _all_gather_objects({k: repr(v) for k, v in values.items()})
    for name in sorted(set().union(*gathered)):
        seen = [g.get(name, "<missing>") for g in gathered]
        if len(set(seen)) > 1:
            raise InconsistentRanksError(_mismatch_message(name, seen))


def _mismatch_message(name: str, seen: list[str]) -> str:
    odd = [r for r, v in enumerate(seen) if v != seen[0]]
    listing = ", ".join(f"rank {r} has {seen[r]}" for r in [0, *odd[:3]])
    more = f" (and {len(odd) - 3} more ranks)" if len(odd) > 3 else ""
    return (
        f"ranks disagree on {name}: {listing}{more}; every rank must load the same model, "
        "data and options"
    )


# ---------------------------------------------------------------------------------------------
# data and models


def shard(batches: Iterable[Any]) -> list[Any]:
    """This rank's share of ``batches``: slice ``r`` of every batch.

    Each batch of ``m`` samples is cut along dimension 0 into ``W`` contiguous slices of
    ``ceil(m / W)`` or ``floor(m / W)`` samples (``torch.tensor_split``); rank ``r`` keeps
    slice ``r`` of every batch (empty slices are dropped). So every rank holds about
    ``1/W`` of the samples of *each* batch: the work is balanced whatever the number and the
    sizes of the batches, one batch is enough, and activation memory per rank shrinks with
    ``W``. The split does not change the operator, the sample-weighted mean over all
    samples, because each slice is weighted by its own size.

    A batch is sliced tensor by tensor: tensors (and numpy arrays) whose first dimension is
    the batch size (the length of the batch's first tensor, as the operator counts it) are
    cut, anything else (broadcast tensors, scalars, strings) is kept whole. When some batch
    cannot be sliced (no sized tensor), whole batches are dealt round robin instead (rank
    ``r`` takes batches ``r, r + W, ...``), which needs at least ``W`` batches.

    Every rank must pass the same batches in the same order (see :func:`shard_checked`).
    Without a process group this is ``list(batches)``.
    """
    return _split(list(batches), rank(), world_size())


def _split(items: list[Any], rank: int, world: int) -> list[Any]:
    if world == 1:
        return items
    sizes = [sample_count(batch) for batch in items]
    if all(size is not None for size in sizes):
        pieces = []
        for batch, size in zip(items, sizes):
            start, stop = batching.slice_bounds(size, world)[rank]
            if stop > start:
                pieces.append(batching.take(batch, size, start, stop))
        return pieces
    if len(items) < world:
        raise UserInputError(
            f"{len(items)} Hessian batches of a kind that cannot be sliced (no tensor with the "
            f"samples along dimension 0) cannot be shared by {world} ranks; pass at least "
            f"{world} batches or use fewer ranks"
        )
    return items[rank::world]


def shard_checked(
    batches: Iterable[Any],
    params: torch.Tensor,
    before_split: Callable[[list[Any]], None] | None = None,
    **values: Any,
) -> Any:
    """Check that all ranks hold the same model and data, then return this rank's shard.

    Compares the number of batches, fingerprints (:func:`fingerprint`) of ``params`` (the
    flat parameters) and of every tensor in the batches, and any further ``values`` (e.g.
    the dtype) with :func:`check_consistent`: ranks that loaded different weights or data
    would otherwise reduce products of different Hessians without any error. Then
    ``before_split(all_batches)`` may raise; the ranks agree on the data by then, so they
    all raise alike. Returns ``batches`` unchanged (a DataLoader stays lazy) without a
    process group.
    """
    if not _active():
        return batches
    items = list(batches)
    check_consistent(
        num_params=params.numel(),
        num_batches=len(items),
        parameters=fingerprint(params),
        data=fingerprint(*_tensors_in(items)),
        **values,
    )
    if before_split is not None:
        before_split(items)
    return _split(items, rank(), world_size())


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short, order-sensitive summary of tensors' values for comparing ranks.

    The weighted sums of :func:`_checksums` over all entries, in float64, printed to 10
    significant digits: equal data on every rank gives equal strings, while the rounding
    tolerates the last-bit differences of a summation order that varies between devices.
    """
    total = torch.zeros(2, dtype=torch.float64)
    count = 0
    for t in tensors:
        flat = t.detach().reshape(-1, 1)
        sums = _checksums(flat.to(torch.float64))
        total += sums.cpu()
        count += flat.numel()
    return f"{count} values, checksums {float(total[0]):.10g} {float(total[1]):.10g}"


def _tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            yield from _tensors_in(obj[key])
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors_in(item)
    elif hasattr(obj, "__array__"):
        yield torch.as_tensor(obj)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers.

    Their hooks reduce first-order gradients only; Hessian products are reduced explicitly.
    A model sharded by FSDP holds only part of its parameters on each rank, which a
    Hessian product over all parameters cannot use.
    """
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    if type(model).__name__ in {"FullyShardedDataParallel", "FSDPModule"} or any(
        type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()
    ):
        raise UserInputError(
            "FSDP-sharded models are not supported: pass the plain module with its full "
            "parameters on every rank (the Hessian batches are what is split between ranks)"
        )
    return model


# ---------------------------------------------------------------------------------------------
# failures


def _store() -> Any | None:
    """The default group's key-value store, or None (no group, or not reachable)."""
    if not is_initialized():
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except (ImportError, RuntimeError, ValueError):
        return None


def announce_failure(exc: BaseException) -> None:
    """Record ``rank r: <error>`` in the store so that the other ranks can name it.

    Best effort: if the store itself is gone there is nothing more to tell.
    """
    store = _store()
    if store is None or not _active():
        return
    message = f"rank {rank()} failed with {type(exc).__name__}: {exc}".strip()
    with contextlib.suppress(Exception):
        number = store.add(_FAIL_COUNT_KEY, 1)
        store.set(_FAIL_KEY.format(number), message)


def _first_announced_failure() -> str | None:
    """The message of the first rank that announced a failure, or None."""
    store = _store()
    if store is None:
        return None
    with contextlib.suppress(Exception):
        key = _FAIL_KEY.format(1)
        if store.check([key]):
            return store.get(key).decode("utf-8", "replace")
    return None


def _record_for_torchrun(exc: BaseException) -> None:
    """Write torchrun's error file (``$TORCHELASTIC_ERROR_FILE``) so its summary shows ``exc``.

    torchrun prints the message and traceback of every worker that left one; best effort.
    """
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    with contextlib.suppress(Exception):
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(exc)


@contextlib.contextmanager
def failure_guard() -> Iterator[None]:
    """Announce any error raised inside to the other ranks (and torchrun), then re-raise.

    A :class:`DistributedError` is a consequence of another rank's failure, not a cause, and
    is not announced.
    """
    try:
        yield
    except DistributedError:
        raise
    except BaseException as exc:
        announce_failure(exc)
        _record_for_torchrun(exc)
        raise


def report_peer_failure(exc: DistributedError, prog: str = "hessian-powerlaw") -> int:
    """Print ``exc`` as one line on stderr and return exit status 1.

    Under torchrun, wait up to :data:`LINGER_S` seconds before returning: torchrun names the
    first worker to exit as the root cause and then stops the others, so letting the rank
    that actually failed exit first makes torchrun's summary name it too.
    """
    print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        time.sleep(LINGER_S)
    return 1
