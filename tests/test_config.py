"""The train config: every shipped config loads and dry-runs; bad configs give one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from mustangs.errors import ConfigError
from trainer.cli import main
from trainer.config import TrainConfig, load_train_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "fashion-mnist-3x3-mustangs", "fashion-mnist-3x3-bce", "fashion-mnist-3x3-spagan",
            "fashion-mnist-3x3-pagan", "mnist-3x3", "celeba-64-dcgan", "rings-3x3"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_opens_with_its_command_and_dry_runs(path, capsys):
    text = path.read_text()
    assert text.startswith(f"# trainer train configs/{path.name}")
    assert isinstance(load_train_config(path), TrainConfig)
    assert main(["train", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "grid:" in out and "# plan:" in out and "# scoring:" in out


def test_dry_run_applies_overrides_after_options(capsys):
    assert main(["train", str(CONFIGS[0]), "--dry-run", "grid.height=3", "coevolution.loss=bce"]) == 0
    out = capsys.readouterr().out
    assert "height: 3" in out and "loss: bce" in out


@pytest.mark.parametrize("override,words", [
    ("grid.height=0", "grid.height"),
    ("coevolution.loss=hinge", "legal values: bce, mustangs, wgan, wgan-gp"),
    ("coevolution.tournament_size=4", "tournament_size=4 is larger than the sub-population (3"),
    ("coevolution.betas=[0.5]", "coevolution.betas"),
    ("network.arch=dcgan64", "set network.arch="),
    ("coevolution.exchange=false", "tournament_size=2 is larger"),
    ("grid.depth=2", "unknown config key 'grid.depth'"),
])
def test_bad_configs_exit_2_with_one_line(override, words, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("grid: {height: 2, width: 2}\n")
    assert main(["train", str(cfg), override, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err
    assert not (tmp_path / "run").exists()


def test_grid_0x3_from_a_file(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("grid:\n  height: 0\n  width: 3\n")
    with pytest.raises(ConfigError, match="grid.height"):
        load_train_config(p)


def test_pagan_without_selection_is_legal():
    cfg = load_train_config(None, ["coevolution.exchange=false", "coevolution.selection=false"])
    assert not cfg.coevolution.exchange


@pytest.mark.parametrize("old,new", [("own", "selected"), ("random", "neighbour")])
def test_retired_adversary_names_say_the_new_name(old, new):
    with pytest.raises(ConfigError, match=f"renamed to '{new}'"):
        load_train_config(None, [f"coevolution.adversary={old}"])


def test_the_reference_recipe_is_the_default_adversary():
    assert load_train_config(None).coevolution.adversary == "selected"
    assert load_train_config("configs/quickstart.yaml").coevolution.adversary == "selected"


def test_bmm_batching_refuses_convolutional_archs():
    with pytest.raises(ConfigError, match="batching=bmm runs MLP networks only"):
        load_train_config(None, ["batching=bmm", "network.arch=dcgan28"])
    assert load_train_config(None, ["batching=bmm"]).batching == "bmm"
