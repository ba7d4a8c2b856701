"""The typed config loader: YAML + dotted overrides, unknown keys and illegal values refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from mustangs.errors import ConfigError
from trainer.configio import load_config, option, parse_overrides, to_yaml


@dataclass
class Inner:
    height: int = option(2, ge=1)  # rows of the grid, >= 1
    loss: str = option("bce", choices=("bce", "mustangs"))  # generator loss


@dataclass
class Outer:
    seed: int = 0  # master seed
    ratio: float = option(1.0, gt=0, le=1)  # in (0, 1]
    note: Optional[str] = None  # free text
    grid: Inner = field(default_factory=Inner)

    def validate(self):
        if self.note == "boom":
            raise ConfigError("note: 'boom' is not allowed; pick anything else")


def test_yaml_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("seed: 3\ngrid:\n  height: 4\n")
    cfg = load_config(Outer, cfg_file, ["grid.loss=mustangs", "ratio=0.5", "note=hi"])
    assert (cfg.seed, cfg.grid.height, cfg.grid.loss, cfg.ratio, cfg.note) == (3, 4, "mustangs", 0.5, "hi")
    assert "height: 4" in to_yaml(cfg)


def test_int_is_accepted_for_float_and_null_for_optional():
    cfg = load_config(Outer, None, ["ratio=1", "note=null"])
    assert cfg.ratio == 1.0 and cfg.note is None


@pytest.mark.parametrize("override, words", [
    (["grid.heigth=3"], ["unknown config key 'grid.heigth'", "did you mean 'grid.height'"]),
    (["grid.loss=wgan"], ["grid.loss", "legal values: bce, mustangs"]),
    (["grid.height=0"], ["grid.height", ">= 1"]),
    (["ratio=0"], ["ratio", "> 0"]),
    (["seed=abc"], ["seed", "integer"]),
    (["note=boom"], ["'boom' is not allowed"]),
    (["seed"], ["key=value"]),
])
def test_bad_values_name_the_key_and_the_fix(override, words):
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, None, override)
    message = str(exc.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Outer, tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, listy)


def test_parse_overrides_nests_and_types():
    assert parse_overrides(["a.b=1", "a.c=true", "d=x"]) == {"a": {"b": 1, "c": True}, "d": "x"}
