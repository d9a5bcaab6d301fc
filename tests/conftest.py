"""Shared test set-up: one torch thread and a fixed seed for every test."""

from __future__ import annotations

import os

import pytest
import torch

# One intra-op thread: small models run faster and steadier that way on a 2-core machine.
torch.set_num_threads(int(os.environ.get("HPL_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
