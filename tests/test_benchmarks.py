"""The trainer benchmarks' own logic: the matmul floor's GEMM list and the GPU check's CPU mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from conftest import needs_fashion  # noqa: E402
from floor import Floor, generation_gemms, linear_dims  # noqa: E402


def test_floor_counts_the_recipes_gemms():
    # A 2-layer MLP pair, hand counted: G = [4 -> 8 -> 6], D = [6 -> 5 -> 1], 2 cells, S = 3, B = 10.
    g, d, B = [4, 8, 6], [6, 5, 1], 10
    mac = lambda dims, n: n * sum(a * b for a, b in zip(dims, dims[1:]))  # noqa: E731
    g_step = mac(g, B) + mac(d, B) + mac(d, B) + B * 8 * 6 + mac(g, B)      # fwd G, fwd D, D in-grads, G in-grads (not z), G w-grads
    d_step = mac(g, B) + mac(d, 2 * B) + 2 * B * 5 * 1 + mac(d, 2 * B)     # fwd G, fwd D, D in-grads (not x), D w-grads
    fitness = 3 * (mac(g, B) + mac(d, 4 * B))
    replace = mac(g, B) + 3 * mac(d, 2 * B) + 3 * mac(g, B) + mac(d, 4 * B)
    want = 2 * 2 * (7 * g_step + 5 * d_step + fitness + replace)
    gemms = generation_gemms(g, d, cells=2, sub=3, batch=B, batches=7, d_steps=5)
    assert sum(x.flop for x in gemms) == want
    floor = Floor(gemms)
    assert floor.flop == want and floor.run() >= 0.0


def test_linear_dims_reads_the_mlp():
    from mustangs.pool.networks import NetSpec, build_discriminator, build_generator

    spec = NetSpec("mlp", 64, (1, 28, 28))
    assert linear_dims(build_generator(spec)) == [64, 256, 256, 784]
    assert linear_dims(build_discriminator(spec)) == [784, 256, 256, 1]
    with pytest.raises(ValueError):
        linear_dims(torch.nn.Conv2d(1, 1, 3))


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_in_cpu_mode(tmp_path):
    # the script the GPU host runs, on tiny sizes on the CPU: every row and the ONNX part work
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["generation"]
    assert {(r["grid"], r["arch"], r["engine"]) for r in rows} >= {("1x1", "mlp", "bmm"), ("2x2", "dcgan28", "vmap")}
    assert all("error" not in r and r["seconds_per_generation"] > 0 for r in rows)
    assert data["onnx"]["providers_active"] == ["CPUExecutionProvider"]
    assert data["onnx"]["max_abs_diff_vs_torch"] < 1e-4 and data["onnx"]["samples_per_second"] > 0


@pytest.mark.slow
def test_study_modes_runs_variants_in_workers_and_writes_records_and_picture(tmp_path):
    # A few Adam steps per network: this checks the study's plumbing (workers, resumable runs,
    # one record per toy × variant × seed × member kind, the picture), not its findings.
    out, js = tmp_path / "runs", tmp_path / "r.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "study_modes.py"), "--out", str(out), "--json", str(js),
           "--seeds", "2", "--toys", "rings", "grid25", "--variants", "a-single", "d-lipizzaner",
           "--generations", "1", "--batches", "2", "--jobs", "2"]
    env = {**os.environ, "MUSTANGS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads(js.read_text())
    kinds = {(r["toy"], r["variant"], r["seed"], r["member"]) for r in records}
    assert len(records) == len(kinds) == 2 * 2 * (1 + 4)
    assert {r["member"] for r in records if r["variant"] == "d-lipizzaner"} == {
        "best-single", "best-cell-mixture", "ensemble-tvd", "ensemble-coverage"}
    assert all(0 <= r["modes_covered"] <= (8 if r["toy"] == "rings" else 25) and 0 <= r["tvd_modes"] <= 1
               for r in records)
    assert all(r["steps_per_network"] == 2 for r in records)
    assert (out / "modes.png").stat().st_size > 0
    assert "| rings | d-lipizzaner | ensemble-tvd | 2 |" in done.stdout
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)   # resumes: no retraining
    assert again.returncode == 0

    def measured(rs):
        return [{k: v for k, v in r.items() if k not in ("cpu_s", "wall_s")} for r in rs]

    assert measured(json.loads(js.read_text())) == measured(records)


def test_check_conditional_serving_scores_the_asked_for_class(monkeypatch):
    # no server: POST /sample is faked; the "judge" reads the class off the first pixel
    import io

    import numpy as np

    import check_conditional_serving as ccs

    calls = []

    def fake_post(port, path, body, timeout=600):
        calls.append(body)
        x = np.zeros((body["n"], 1, 28, 28), np.float32)
        x[: body["seed"], 0, 0, 0] = 1.0   # request `seed` has `seed` samples judged class 1, the rest class 0
        buf = io.BytesIO()
        np.save(buf, x)
        return buf.getvalue(), {}

    def judge(x):
        return torch.stack([1 - x[:, 0, 0, 0], x[:, 0, 0, 0]], 1)

    monkeypatch.setattr(ccs, "post", fake_post)
    row = ccs.check_class(0, "Trouser", 1, 4, 3, judge)
    assert [c["labels"] for c in calls] == [{"Trouser": 4}] * 3 and [c["seed"] for c in calls] == [1, 2, 3]
    assert row["per_request"] == [0.25, 0.5, 0.75] and row["mean"] == 0.5 and row["min"] == 0.25


def test_time_to_quality_trains_in_segments_and_judges_each(tmp_path):
    # The plumbing only (segments by --resume, CPU per segment, judging, table, picture), on a tiny setting.
    js, png = tmp_path / "t.json", tmp_path / "t.png"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), "--arch", "mlp", "--recipes", "plain",
           "2x2-bce", "--checkpoints", "1", "2", "--batches", "5", "--seeds", "0", "--samples", "200",
           "--diversity-samples", "100", "--budget", "20", "--out", str(tmp_path / "runs"), "--json", str(js),
           "--picture", str(png)]
    env = {**os.environ, "MUSTANGS_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads(js.read_text())["records"]
    assert [(r["recipe"], r["generations"]) for r in records] == [("plain", 1), ("plain", 2), ("2x2-bce", 1),
                                                                   ("2x2-bce", 2)]
    grid = [r for r in records if r["recipe"] == "2x2-bce"]
    assert grid[1]["train_cpu_s"] > grid[0]["train_cpu_s"] > 0 and grid[1]["steps_per_network"] == 10
    assert all(r["ensemble_fid"] is not None for r in grid) and records[0]["ensemble_fid"] is None
    assert png.stat().st_size > 0 and "| 2x2-bce | 0 | 2 | 10 |" in done.stdout


@needs_fashion
def test_class_shares_counts_what_the_judge_sees_and_flags_missing_classes(tmp_path, capsys, one_thread):
    # 200 real test Trousers: the judge calls nearly all of them Trouser; every other class is missing
    import numpy as np

    import class_shares
    from mustangs.data.datasets import load_dataset

    ds = load_dataset("fashion-mnist", "test")
    trousers = ds.batch(torch.nonzero(ds.labels == 1).flatten()[:200]).numpy()
    npy = tmp_path / "trousers.npy"
    np.save(npy, trousers)
    js = tmp_path / "shares.json"
    assert class_shares.main([str(npy), "--json", str(js)]) == 0
    assert class_shares.main([str(npy), "--min-share", "0.02"]) == 1
    rec = json.loads(js.read_text())
    assert rec["n"] == 200 and rec["shares"]["Trouser"] >= 0.9 and rec["min_share"] == 0.0
    assert abs(sum(rec["shares"].values()) - 1.0) < 1e-3 and rec["tvd_uniform"] >= 0.8
    assert "smallest share 0.0%" in capsys.readouterr().out
