"""Checkpoints: exact resume (bit-identical pool), corrupt latest falls back to the previous, Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


from test_train import RINGS, run_cli

OVER = RINGS + ["coevolution.batches_per_generation=4", "output.report=false", "mixture.eval_samples=200",
                "eval.fid_samples=200", "coevolution.mutation_probability=1.0"]


def pool_bytes(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "pool").glob("*.safetensors"))}


def metrics(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds")
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 4-generation run."""
    tmp = tmp_path_factory.mktemp("straight")
    assert run_cli(tmp, "run", OVER + ["coevolution.generations=4"]) == 0
    return tmp / "run"


@pytest.mark.slow
def test_resume_is_bit_identical(straight, tmp_path):
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=2"]) == 0
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=4"], "--resume") == 0
    run = tmp_path / "run"
    assert pool_bytes(run) == pool_bytes(straight) and len(pool_bytes(run)) == 4
    assert metrics(run) == metrics(straight)
    m1 = json.loads((run / "pool" / "manifest.json").read_text())
    m2 = json.loads((straight / "pool" / "manifest.json").read_text())
    assert m1["mixtures"] == m2["mixtures"]


@pytest.mark.slow
def test_truncated_latest_checkpoint_falls_back_to_previous(straight, tmp_path, capsys):
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=3"]) == 0
    ck = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ck.glob("gen-*.safetensors")) == ["gen-000002.safetensors",
                                                                    "gen-000003.safetensors"]
    latest = ck / "gen-000003.safetensors"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    capsys.readouterr()
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=4"], "--resume") == 0
    err = capsys.readouterr().err
    assert "gen-000003" in err and "truncated or corrupt" in err and "falling back" in err
    assert "resuming" in err and "generation 2" in err
    assert pool_bytes(tmp_path / "run") == pool_bytes(straight)
    assert metrics(tmp_path / "run") == metrics(straight)


def test_no_usable_checkpoint_is_one_line(tmp_path, capsys):
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=1", "eval.every=null"]) == 0
    for p in (tmp_path / "run" / "checkpoints").glob("gen-*.safetensors"):
        p.write_bytes(b"garbage")
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=2"], "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no usable checkpoint")


def test_resume_refuses_a_different_config(tmp_path, capsys):
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=1", "eval.every=null"]) == 0
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=2", "eval.every=null", "seed=5"], "--resume") == 2
    assert "differs from the run's in seed" in capsys.readouterr().err


def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import trainer.coevolution as coev

    real_step = coev.Coevolution.step
    calls = {"n": 0}

    def step(self, block, on_batch=None, score=True):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_step(self, block, on_batch, score)

    monkeypatch.setattr(coev.Coevolution, "step", step)
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=3", "eval.every=null"]) == 130
    err = capsys.readouterr().err
    assert "checkpoint of generation 1 is kept" in err and "--resume" in err
    monkeypatch.undo()
    assert run_cli(tmp_path, "run", OVER + ["coevolution.generations=2", "eval.every=null"], "--resume") == 0
    assert len(metrics(tmp_path / "run")) == 2


def test_a_checkpoint_from_before_a_config_key_existed_still_resumes():
    """Keys added by a later version count as their defaults; retired value names as their new names."""
    from trainer.config import TrainConfig
    from trainer.configio import to_dict
    from trainer.run_folder import config_changes

    new = to_dict(TrainConfig())
    old = to_dict(TrainConfig())
    del old["eval"]["force_classifier"]
    old["coevolution"]["adversary"] = "own"
    assert config_changes(old, new) == []
    old["coevolution"]["adversary"] = "random"
    assert config_changes(old, new) == ["coevolution.adversary"]


def test_tensorboard_files_of_an_unfinished_run_are_the_runs_own(tmp_path):
    from trainer.run_folder import foreign_files

    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events.out.tfevents.1764500000.host.123.0").write_bytes(b"x")
    (tmp_path / "metrics.jsonl").write_text("")
    assert foreign_files(tmp_path) == []
    (tmp_path / "tensorboard" / "notes.txt").write_text("mine")
    assert foreign_files(tmp_path) != []
