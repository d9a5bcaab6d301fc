"""Worker processes that split the torch threads (`hessian_powerlaw._processes`)."""

from __future__ import annotations

import pytest

from hessian_powerlaw._processes import spawn_pool


def _threads(_: int) -> int:
    import torch

    return torch.get_num_threads()


def test_each_worker_has_its_share_of_threads() -> None:
    with spawn_pool(2, 1) as pool:
        assert list(pool.map(_threads, range(2))) == [1, 1]


@pytest.mark.parametrize(("workers", "threads"), [(0, 1), (1, 0), (-1, 2)])
def test_a_pool_needs_a_worker_and_a_thread(workers: int, threads: int) -> None:
    with pytest.raises(ValueError, match="workers and threads must be >= 1"):
        spawn_pool(workers, threads)
