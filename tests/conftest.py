"""Shared test fixtures. Tests never download anything (MUSTANGS_OFFLINE=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MUSTANGS_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


needs_fashion = pytest.mark.skipif(not (FASHION_DIR.is_dir() or os.environ.get("MUSTANGS_DATA")),
                                   reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def one_thread():
    """Small tests run on one torch thread: no spinning when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rings_pool(folder: Path, n: int = 3) -> Path:
    """A pool of ``n`` untrained rings generators (seeds 0..n-1) written to ``folder``; returns its root."""
    from mustangs.pool.format import write_pool
    from mustangs.pool.networks import NetSpec, RingsGenerator

    gens = []
    for s in range(n):
        torch.manual_seed(s)
        gens.append((f"r{s}", RingsGenerator(8, (2,)).eval(), {}))
    return write_pool(folder, NetSpec("rings-mlp", 8, (2,)), "rings", gens).root


# Hypothesis (tests/test_fuzz_*.py): a small, fixed-seed run in CI; `pytest --hypothesis-profile=long`
# goes deeper with fresh random cases.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    settings.register_profile("long", max_examples=500, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # the dev extra is not installed: the fuzz tests skip themselves
    pass
