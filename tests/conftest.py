"""Shared test set-up: deterministic torch, float64 by default where a test asks for it."""

from __future__ import annotations

import os

import pytest
import torch

# The suite runs on a 2-core machine; one intra-op thread per process keeps runs stable.
torch.set_num_threads(int(os.environ.get("HPL_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
