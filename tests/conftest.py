"""Shared fixtures. Real-data tests read the CIFAR-10 JPEG-mirror archive from $SEBENCH_CIFAR10_JPEG (CI sets
it to the shared copy) and are skipped, with the reason shown, when it is unset."""

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """$SEBENCH_CACHE when set (CI keeps it between tests), so the archive is decoded once per run."""
    env = os.environ.get("SEBENCH_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("sebench-cache")


@pytest.fixture(scope="session")
def real_archive() -> str:
    path = os.environ.get("SEBENCH_CIFAR10_JPEG")
    if not path:
        pytest.skip("SEBENCH_CIFAR10_JPEG not set: point it at cifar10-jpeg.tar.xz to test the real archive")
    return path


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is as fast, and immune to a busy machine's OpenMP stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
