"""Worker processes that split this machine's torch CPU threads between them.

Two single-thread Hessian solves on two cores finish sooner than the same solves one after
the other with two threads each: a small network's products and the solvers' memory-bound
Gram-Schmidt gain well under 2x from a second thread (1.44x measured on LeNet, see
docs/benchmarks.md). The demo and ``reproduce`` therefore run independent spectra side by side
in processes made here.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def spawn_pool(workers: int, threads: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each.

    Spawned, not forked: a fork would copy torch's thread pools (and any OpenMP state) of this
    process into the children. Callers need the usual ``if __name__ == "__main__":`` guard of
    :mod:`multiprocessing` in scripts, and must pass picklable functions and arguments.
    """
    if workers < 1 or threads < 1:
        raise ValueError(f"workers and threads must be >= 1, got {workers} and {threads}")
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_threads,
        initargs=(threads,),
    )
