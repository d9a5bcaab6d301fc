"""Running a sub-command as one rank of a ``torchrun`` job (``python -m torch.distributed``).

The process-group helpers themselves live in :mod:`hessian_powerlaw.distributed`; this is the
command line's side: which sub-commands share their products between ranks, who prints, and
how a failing rank is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from hessian_powerlaw import distributed
from hessian_powerlaw.errors import UserInputError

__all__ = ["run_cli"]


def run_cli(args: argparse.Namespace, prog: str = "hessian-powerlaw") -> int:
    """Run a parsed sub-command as one rank of a ``torchrun`` job.

    A sub-command that shares its Hessian products between ranks says so with
    ``parser.set_defaults(data_parallel=True)`` (``spectrum``). For it, this initialises the
    process group from the environment, silences stdout and progress bars on every rank but
    0 (only rank 0 prints; the command writes files only on rank 0), announces a failing
    rank to the others, and prints a :class:`DistributedError` as one line (exit status 1).
    A :class:`UserInputError` propagates with the rank in its message so that the caller
    prints it as usual.

    Any other sub-command runs once, on rank 0 without a process group (with a note on
    stderr); the other ranks exit at once with status 0. Several ranks would otherwise
    repeat the same work and race to write the same files.
    """
    if not getattr(args, "data_parallel", False):
        return _run_on_rank_zero_only(args, prog)
    distributed.init_from_env()
    try:
        with distributed.failure_guard(), _quiet_unless_primary(args):
            status = int(args.run(args) or 0)
            distributed.shutdown(synchronize=True)
        return status
    except distributed.DistributedError as exc:
        return distributed.report_peer_failure(exc, prog)
    except UserInputError as exc:
        if distributed.world_size() > 1 and not isinstance(exc, distributed.InconsistentRanksError):
            where = f"rank {distributed.rank()} of {distributed.world_size()}"
            raise UserInputError(f"{where}: {exc}") from exc
        raise
    finally:
        distributed.shutdown()


def _run_on_rank_zero_only(args: argparse.Namespace, prog: str) -> int:
    if os.environ.get("RANK", "0") != "0":
        return 0
    command = getattr(args, "command", "this command")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(
            f"{prog}: note: {command} does not split its work between torchrun ranks; "
            "running it once, on rank 0",
            file=sys.stderr,
        )
    return int(args.run(args) or 0)


@contextlib.contextmanager
def _quiet_unless_primary(args: argparse.Namespace) -> Iterator[None]:
    if distributed.is_primary():
        yield
        return
    if hasattr(args, "quiet"):
        args.quiet = True
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
