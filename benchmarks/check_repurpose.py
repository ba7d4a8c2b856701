"""Must-show check of request-time re-purposing: what the server promises vs what it draws.

For each model (exported from a pool with class statistics) this starts ``serving serve``, and for
three targets — uniform; the two classes the pool reaches best at 50/50; one class (the one whose
best generator beats the uniform mixture's share by the widest ratio) — and then for every
single class, it draws ``--n`` samples through ``POST /sample`` (format npy), classifies them with
the project's evaluation classifier and compares the measured TVD to the target with the
server's ``X-Mustangs-Estimated-TVD``. The uniform ensemble (the model's default weights) is drawn
the same way to get each class's baseline share.

    python benchmarks/check_repurpose.py runs/out/qs-pool.onnx runs/out/fm3x3-pool.onnx --json out.json

Exit code 1 when a must-show target misses (|measured − estimated| > 0.03, or the one-class
target's share < 2× the uniform ensemble's).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict, timeout: float = 600) -> tuple[bytes, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read(), {k.lower(): v for k, v in r.headers.items()}


def start_server(model: Path, port: int, max_n: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", PYTHONPATH=str(ROOT))
    env.setdefault("BENTOML_HOME", str(ROOT / "runs" / "bentoml-home"))
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", str(model), "--port", str(port),
                             "--max-n", str(max_n), "--threads", str(threads)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise SystemExit(f"server for {model} did not become ready")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def classify(classifier, x: np.ndarray, C: int) -> np.ndarray:
    """Histogram of the classifier's argmax labels over ``x`` (float32 [-1, 1] images)."""
    import torch

    counts = np.zeros(C)
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            logits = classifier(torch.from_numpy(x[i:i + 1000]))
            counts += np.bincount(logits.argmax(1).numpy(), minlength=C)
    return counts / len(x)


def draw(port: int, n: int, seed: int, target=None) -> tuple[np.ndarray, float | None, float]:
    body = {"n": n, "seed": seed, "format": "npy"}
    if target is not None:
        body["target"] = target
    t = time.perf_counter()
    data, headers = post(port, "/sample", body)
    seconds = time.perf_counter() - t
    est = headers.get("x-mustangs-estimated-tvd")
    return np.load(io.BytesIO(data), allow_pickle=False), (float(est) if est is not None else None), seconds


def check_model(model: Path, n: int, threads: int, classifier, all_classes: bool) -> dict:
    port = free_port()
    proc = start_server(model, port, n, threads)
    try:
        info = json.loads(post(port, "/info", {})[0])
        names = info["classes"]
        C = len(names)
        hists = np.array([[g["class_histogram"][c] for c in names] for g in info["generators"]])
        # The uniform ensemble (the model's default weights): each class's baseline share.
        x, _, _ = draw(port, n, 1)
        base = classify(classifier, x, C)
        best = hists.max(0)
        two = [names[i] for i in np.argsort(-best, kind="stable")[:2]]
        one = names[int(np.argmax(best / np.maximum(base, 1.0 / n)))]
        targets = [("uniform", "uniform"), ("two classes 50/50", {two[0]: 0.5, two[1]: 0.5}),
                   ("one class", {one: 1.0})]
        if all_classes:
            targets += [(f"class {c}", {c: 1.0}) for c in names if c != one]
        rows = []
        for seed, (label, target) in enumerate(targets, start=2):
            x, est, seconds = draw(port, n, seed, target)
            got = classify(classifier, x, C)
            t = np.full(C, 1.0 / C) if target == "uniform" else np.array([target.get(c, 0.0) for c in names])
            measured = float(0.5 * np.abs(got - t).sum())
            row = {"label": label, "target": target, "estimated_tvd": est, "measured_tvd": round(measured, 4),
                   "gap": round(abs(measured - est), 4), "seconds": round(seconds, 2)}
            if isinstance(target, dict) and len(target) == 1:
                c = names.index(next(iter(target)))
                row.update(share=round(float(got[c]), 4), uniform_share=round(float(base[c]), 4),
                           ratio=round(float(got[c] / max(base[c], 1e-12)), 2))
            rows.append(row)
        return {"model": str(model), "generators": len(info["generators"]), "n": n, "classes": names,
                "uniform_ensemble_histogram": [round(float(b), 4) for b in base], "rows": rows}
    finally:
        stop_server(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help=".onnx models exported from pools (with class statistics)")
    ap.add_argument("--n", type=int, default=10_000, help="samples per target, drawn through HTTP")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the server")
    ap.add_argument("--dataset", default="fashion-mnist", help="dataset of the evaluation classifier")
    ap.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                    help="the judge that classifies the drawn samples (None: the one for --dataset); use the one the "
                         "models were exported with (POST /info names it)")
    ap.add_argument("--force-classifier", action="store_true", help="accept a judge trained on another dataset")
    ap.add_argument("--all-classes", action="store_true", help="also check every single-class target")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    from mustangs.judge import classifier_store

    classifier, record = classifier_store.load_checked(args.classifier, args.dataset, "cpu", args.force_classifier)
    print(f"judge: {record['name']} ({record['dataset']}, sha256 {record['sha256'][:12]}…)")
    ok, results = True, []
    for model in args.models:
        res = check_model(Path(model), args.n, args.threads, classifier, args.all_classes)
        results.append(res)
        print(f"\n{model}: {res['generators']} generators, {args.n} samples per target through HTTP")
        print(f"{'target':<34} {'est. tvd':>8} {'measured':>8} {'gap':>6} {'share':>6} {'uniform':>7} {'ratio':>6}")
        for i, r in enumerate(res["rows"]):
            t = r["target"]
            tgt = t if isinstance(t, str) else ",".join(f"{k}:{v:g}" for k, v in t.items())
            extra = (f"{r['share']:>6.3f} {r['uniform_share']:>7.3f} {r['ratio']:>6.2f}" if "share" in r else "")
            print(f"{r['label'] + ' ' + tgt:<34.34} {r['estimated_tvd']:>8.4f} {r['measured_tvd']:>8.4f} "
                  f"{r['gap']:>6.4f} {extra}")
            if i < 3:
                ok &= r["gap"] <= 0.03
                if "ratio" in r:
                    ok &= r["ratio"] >= 2.0
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print("\nmust-show:", "PASS" if ok else "FAIL", "(|measured - estimated| <= 0.03; one class >= 2x uniform share)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
