"""The hostile cases issue 23 listed, each pinned: one line and exit 2 (or a documented decision)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_faults import RINGS, _train, call


def test_huge_mixture_sigma_is_refused_before_the_run_folder_exists(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# t\n")
    code, _, err = _train(cfg, tmp_path / "run", over=("mixture.sigma=1e308",))
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "mixture.sigma" in err, err
    assert not (tmp_path / "run").exists()


def test_quiet_does_not_print_the_resolved_config(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("# t\n")
    code, _, err = _train(cfg, tmp_path / "run", over=("data.dataset=fashion-mnist", "data.data_dir=/nowhere"))
    assert code == 2 and "resolved config" not in err and len(err.strip().splitlines()) == 1, err


def test_a_pickle_that_is_not_a_state_dict_is_one_line_of_ours(tmp_path):
    from ensembler.cli import main as ens

    lip = tmp_path / "lip"
    lip.mkdir()
    torch.save({"w": torch.zeros(2), "f": Path("x")}, lip / "generator-0.pkl")  # a non-tensor object
    code, _, err = call(ens, ["import-lipizzaner", lip, "--out", tmp_path / "pool"])
    line = err.strip()
    assert code == 2 and len(line.splitlines()) == 1 and "Python objects other than tensors" in line, err
    assert "weights_only" not in line and "WeightsUnpickler" not in line


def test_int32_weights_in_a_pool_are_refused_not_cast(tmp_path):
    """Decision (issue 23): a generator tensor of an integer dtype is a foreign or damaged file."""
    from safetensors.torch import load_file, save_file

    from conftest import rings_pool
    from mustangs.errors import UserError
    from mustangs.pool.format import read_pool

    root = rings_pool(tmp_path / "pool")
    f = root / "r0.safetensors"
    state = load_file(f)
    key = next(iter(state))
    state[key] = state[key].to(torch.int32)
    save_file(state, str(f))
    with pytest.raises(UserError, match="dtype int32"):
        read_pool(root).load_generator(0, check_hash=False)


def test_evaluate_with_few_samples(tmp_path):
    from conftest import rings_pool
    from ensembler.cli import main as ens

    pool = rings_pool(tmp_path / "pool")
    code, out, err = call(ens, ["evaluate", pool, "-n", 200, "--device", "cpu"])
    assert code == 0 and "Traceback" not in err, err[-800:]
    assert "uniform" in out
