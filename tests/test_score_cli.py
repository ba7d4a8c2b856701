"""``trainer score``: real vs real scores well, noise scores badly, every bad input is one line + exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, needs_fashion
from trainer.cli import main


@pytest.fixture(scope="module")
def stats_cache(tmp_path_factory):
    """One statistics cache for the module, so the real test split is featurised once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(stats_cache, monkeypatch):
    monkeypatch.setenv("MUSTANGS_CACHE", str(stats_cache))
    return stats_cache


def _score(capsys, *argv) -> dict:
    rc = main(["score", *argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def _fails_with_one_line(capsys, *argv, match: str = "") -> str:
    rc = main(["score", *argv])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


@needs_fashion
def test_real_train_split_scores_far_better_than_noise(capsys, cache):
    real = _score(capsys, "--real", "fashion-mnist:test", "--fake", "fashion-mnist:train", "--samples", "2000")
    noise = _score(capsys, "--real", "fashion-mnist:test", "--fake", "noise", "--samples", "2000")
    assert set(real) >= {"fid_cls2k", "tvd_cls2k", "is_cls2k"}
    assert real["samples"] == 2000 and real["classifier_sha256"]
    assert real["tvd_cls2k"] < 0.05
    assert noise["tvd_cls2k"] > 0.3
    assert real["fid_cls2k"] * 20 < noise["fid_cls2k"]
    assert real["is_cls2k"] > 5 > noise["is_cls2k"]
    # sample-level metrics on the classifier's features, same 2k samples against 2k real ones
    assert real["recall_cls2k"] > 0.8 and real["coverage_cls2k"] > 0.8 and real["density_cls2k"] > 0.8
    assert noise["recall_cls2k"] < 0.05 and noise["coverage_cls2k"] < 0.05
    assert abs(real["kid_cls2k"]) * 20 < noise["kid_cls2k"]
    assert real["classifier"]["name"] == "fashion-mnist" and real["classifier"]["source"] == "shipped"


@needs_fashion
def test_npy_and_png_sources_agree_with_each_other(capsys, cache, tmp_path):
    from PIL import Image

    from mustangs.data.datasets import load_dataset

    images = load_dataset("fashion-mnist", "test").data[:300, 0].numpy()  # uint8 [N, 28, 28]
    np.save(tmp_path / "u8.npy", images)
    np.save(tmp_path / "f32_nhwc.npy", (images[..., None].astype(np.float32) / 127.5 - 1))
    np.save(tmp_path / "u8_nchw.npy", images[:, None])
    png = tmp_path / "png"
    png.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(png / f"{i:04d}.png")
    results = [_score(capsys, "--fake", str(src), "--samples", "300", "--metrics", "fid,tvd")
               for src in (tmp_path / "u8.npy", tmp_path / "f32_nhwc.npy", tmp_path / "u8_nchw.npy", png)]
    for r in results[1:]:
        assert r["fid_cls300"] == pytest.approx(results[0]["fid_cls300"], rel=1e-4)
        assert r["tvd_cls300"] == pytest.approx(results[0]["tvd_cls300"], abs=1e-9)
    assert results[0]["samples"] == 300


@needs_fashion
def test_target_option_repurposes_tvd(capsys, cache):
    r = _score(capsys, "--fake", "fashion-mnist:train", "--samples", "2000", "--metrics", "tvd", "--target", "0:1")
    assert set(k for k in r if k.endswith("_cls2k")) == {"tvd_cls2k"}
    assert r["tvd_cls2k"] == pytest.approx(0.9, abs=0.03)
    real = _score(capsys, "--fake", "fashion-mnist:train", "--samples", "2000", "--metrics", "tvd", "--target", "real")
    assert real["tvd_cls2k"] < 0.05


def test_rings_score_needs_no_data_or_weights(capsys, cache):
    r = _score(capsys, "--real", "rings:test", "--fake", "rings:train", "--samples", "4000")
    assert r["tvd_cls4k"] < 0.05 and r["is_cls4k"] == pytest.approx(8, rel=0.05)
    assert r["fid_cls4k"] < 0.01


# --------------------------------------------------------------------------- bad inputs: one line, exit 2

def test_corrupt_npy(capsys, cache, tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY garbage" + bytes(100))
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", str(bad), match="cannot read")


def test_truncated_npy_and_npz_archive(capsys, cache, tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((100, 2), np.float32))
    (tmp_path / "t.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:300])
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", str(tmp_path / "t.npy"), match="cannot read")
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 2), np.float32))
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", str(tmp_path / "a.npz"), match="not an array")


def test_pickled_npy_is_refused(capsys, cache, tmp_path):
    bad = tmp_path / "objects.npy"
    np.save(bad, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", str(bad), match="cannot read")


def test_missing_file(capsys, cache, tmp_path):
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", str(tmp_path / "nope.npy"),
                         match="no such file or folder")


@needs_fashion
def test_wrong_shape_and_range(capsys, cache, tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((10, 32, 32), np.uint8))
    _fails_with_one_line(capsys, "--fake", str(tmp_path / "big.npy"), match="shape")
    np.save(tmp_path / "range.npy", np.full((10, 28, 28), 3.0, np.float32))
    _fails_with_one_line(capsys, "--fake", str(tmp_path / "range.npy"), match="[-1, 1]")
    np.save(tmp_path / "int.npy", np.zeros((10, 28, 28), np.int64))
    _fails_with_one_line(capsys, "--fake", str(tmp_path / "int.npy"), match="dtype")


def test_unknown_dataset_split_and_metric(capsys, cache):
    _fails_with_one_line(capsys, "--real", "imagenet:test", "--fake", "noise", match="unknown dataset")
    _fails_with_one_line(capsys, "--real", "rings:val", "--fake", "noise", match="unknown split")
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", "foo:train", match="unknown dataset")
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", "noise", "--metrics", "fid,lpips", match="lpips")
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", "noise", "--target", "0:1,9:1", match="range")


def test_missing_data(capsys, monkeypatch, tmp_path):
    import mustangs.data.datasets

    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))  # nothing cached, nothing downloaded
    monkeypatch.setenv("MUSTANGS_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(mustangs.data.datasets, "SYSTEM_DIRS", {})
    line = _fails_with_one_line(capsys, "--real", "fashion-mnist:test", "--fake", "noise", match="not found")
    assert "MUSTANGS_DATA" in line or "--data-dir" in line


def test_inception_without_weights_is_refused_at_once(capsys, cache, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _fails_with_one_line(capsys, "--real", "rings:test", "--fake", "noise", "--inception",
                         match="pt_inception-2015-12-05-6726825d.pth")


def test_subprocess_missing_classifier_and_data_exit_2(tmp_path):
    env = {"MUSTANGS_OFFLINE": "1", "MUSTANGS_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "trainer", "score", "--real", "mnist:test", "--fake", "noise"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "mnist" in lines[0]
    assert proc.stdout == ""
