"""Which classifier judges: lookup order explicit → cache → shipped, dataset checks, records, refusals."""

from __future__ import annotations

import json
import shutil

import pytest

from mustangs.errors import UserError
from mustangs.judge import classifier_store as store
from mustangs.judge.classifier import ASSETS_DIR


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def copy_shipped(folder, dataset_in_json: str | None = None, name: str = "fashion-mnist"):
    """A copy of the shipped Fashion-MNIST classifier in ``folder`` (optionally claiming another dataset)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ASSETS_DIR / "classifier-fashion-mnist.safetensors", folder / f"classifier-{name}.safetensors")
    info = json.loads((ASSETS_DIR / "classifier-fashion-mnist.json").read_text())
    if dataset_in_json:
        info["dataset"] = dataset_in_json
    (folder / f"classifier-{name}.json").write_text(json.dumps(info))
    return folder


def test_lookup_order_is_explicit_then_cache_then_shipped(cache, tmp_path):
    assert store.resolve(None, "fashion-mnist").source == "shipped"
    copy_shipped(cache / "classifiers" / "fashion-mnist")
    ref = store.resolve(None, "fashion-mnist")
    assert ref.source == "cache" and ref.weights.parent == cache / "classifiers" / "fashion-mnist"
    assert store.resolve("fashion-mnist").source == "cache"
    mine = copy_shipped(tmp_path / "mine")
    for spec in (mine, mine / "classifier-fashion-mnist.json", mine / "classifier-fashion-mnist.safetensors"):
        ref = store.resolve(str(spec), "fashion-mnist")
        assert ref.source == "explicit" and ref.dataset == "fashion-mnist"
    assert store.resolve(str(mine)).name == "mine"
    model = store.load(store.resolve(str(mine)))
    assert model.sha256 == ref.sha256 and model.ref.source == "explicit"
    assert store.resolve("rings").source == "analytic"
    assert {"fashion-mnist", "rings"} <= set(store.available())


def test_record_names_the_judge(cache):
    ref = store.resolve(None, "fashion-mnist")
    rec = ref.record()
    assert rec["name"] == "fashion-mnist" and rec["dataset"] == "fashion-mnist" and len(rec["sha256"]) == 64
    assert rec["source"] == "shipped" and rec["forced"] is False and rec["test_accuracy"] > 0.9
    assert ref.record(forced=True)["forced"] is True


def test_a_classifier_for_another_dataset_is_refused_naming_both(cache, tmp_path):
    digits = store.resolve(str(copy_shipped(tmp_path / "digits-clf", "mnist", name="mnist")))
    assert digits.dataset == "mnist" and digits.name == "digits-clf"
    with pytest.raises(UserError) as err:
        store.check_dataset(digits, "fashion-mnist", what="the pool")
    line = str(err.value)
    assert "\n" not in line and "'digits-clf'" in line and "mnist" in line and "fashion-mnist" in line
    assert "--force-classifier" in line
    warned = []
    assert store.check_dataset(digits, "fashion-mnist", True, log=warned.append) is True
    assert warned and "forced" in warned[0]
    assert store.check_dataset(digits, "mnist") is False
    _, record = store.load_checked("fashion-mnist", "mnist", force=True, log=lambda m: None)
    assert record["forced"] is True


def test_lookup_errors_are_one_line_with_the_remedy(cache, tmp_path):
    with pytest.raises(UserError, match="trainer classifier train --dataset mnist"):
        store.resolve(None, "mnist")
    with pytest.raises(UserError, match="available: .*fashion-mnist"):
        store.resolve("no-such-name")
    with pytest.raises(UserError, match="no such file or folder"):
        store.resolve(str(tmp_path / "nowhere" / "clf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no classifier-\\*.json"):
        store.resolve(str(tmp_path / "empty"))
    two = copy_shipped(tmp_path / "two")
    copy_shipped(two, name="other")
    with pytest.raises(UserError, match="several classifiers"):
        store.resolve(str(two))
    broken = copy_shipped(tmp_path / "broken")
    (broken / "classifier-fashion-mnist.json").write_text("{not json")
    with pytest.raises(UserError, match="not a classifier description"):
        store.resolve(str(broken))
    tampered = copy_shipped(tmp_path / "tampered")
    with open(tampered / "classifier-fashion-mnist.safetensors", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(UserError, match="does not match the sha256"):
        store.load(store.resolve(str(tampered)))


def test_training_writes_to_the_cache_not_the_package(cache, monkeypatch):
    import mustangs.data.datasets
    from test_classifier import _tiny_dataset
    from mustangs.judge.classifier_training import train_classifier

    before = sorted(p.name for p in ASSETS_DIR.iterdir())
    monkeypatch.setattr(mustangs.data.datasets, "load_dataset",
                        lambda name, split, data_dir=None: _tiny_dataset(128 if split == "train" else 64,
                                                                         0 if split == "train" else 1))
    info = train_classifier("mnist", epochs=1, progress=False, log=lambda s: None)
    folder = cache / "classifiers" / "mnist"
    assert json.loads((folder / "classifier-mnist.json").read_text())["sha256"] == info["sha256"]
    assert sorted(p.name for p in ASSETS_DIR.iterdir()) == before
    ref = store.resolve(None, "mnist")     # found by the dataset's name from now on
    assert ref.source == "cache" and ref.sha256 == info["sha256"]


def test_cli_list_and_eval_with_classifier(cache, tmp_path, capsys):
    from trainer.cli import main

    copy_shipped(tmp_path / "mine")
    assert main(["classifier", "list", "--json"]) == 0
    names = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert names["fashion-mnist"]["source"] == "shipped" and names["rings"]["source"] == "analytic"
    assert main(["classifier", "eval", "--classifier", "rings", "--samples", "500", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "rings" and out["accuracy"] > 0.95 and out["classifier"]["source"] == "analytic"


def test_score_refuses_a_foreign_judge_in_one_line(cache, capsys):
    from trainer.cli import main

    assert main(["score", "--fake", "noise", "--classifier", "rings", "--real", "fashion-mnist:test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'rings'" in err[0] and "fashion-mnist" in err[0]


def test_train_refuses_a_foreign_eval_classifier_in_one_line(tmp_path, cache, capsys):
    from test_train import RINGS, run_cli

    assert run_cli(tmp_path, "run", RINGS + ["eval.classifier=fashion-mnist"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'fashion-mnist'" in err[0] and "rings" in err[0] and "eval.force_classifier" in err[0]
    assert not (tmp_path / "run" / "pool").exists()
