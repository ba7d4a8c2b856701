"""Check of class-conditional serving: does a served conditional model draw the class it is asked for?

Starts ``serving serve`` on a conditional model (``serving export`` of a pool or ensemble trained with
``network.conditional=true``), sends ``--requests`` requests ``POST /sample`` with
``{"n": N, "seed": s, "format": "npy", "labels": {CLASS: N}}`` for seeds 1, 2, …, classifies every
returned sample with the project's evaluation classifier (the judge of ``cond_acc_cls10k``) and prints,
per asked-for class, the fraction of samples the judge calls that class: mean, sd, min and max over the
requests (chance is 1/C; 1 is perfect).

    python benchmarks/check_conditional_serving.py runs/cond/cond.onnx                     # 20 x 16 Trousers
    python benchmarks/check_conditional_serving.py runs/cond/cond.onnx --class Bag --class Sneaker
    python benchmarks/check_conditional_serving.py runs/cond/cond.onnx --all-classes --json out.json

Exit code 1 when a class's mean fraction is below ``--min-mean`` (default 0: report only).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from check_repurpose import free_port, post, start_server, stop_server  # noqa: E402


def judge_labels(classifier, x: np.ndarray) -> np.ndarray:
    """The classifier's argmax label of each sample (float32 [-1, 1] images)."""
    import torch

    with torch.no_grad():
        return classifier(torch.from_numpy(x)).argmax(1).numpy()


def check_class(port: int, name: str, index: int, n: int, requests: int, classifier) -> dict:
    fractions, seconds = [], []
    for seed in range(1, requests + 1):
        t = time.perf_counter()
        data, _ = post(port, "/sample", {"n": n, "seed": seed, "format": "npy", "labels": {name: n}})
        seconds.append(time.perf_counter() - t)
        x = np.load(io.BytesIO(data), allow_pickle=False)
        if len(x) != n:
            raise SystemExit(f"asked for {n} samples of {name}, got {len(x)}")
        fractions.append(float((judge_labels(classifier, x) == index).mean()))
    f = np.array(fractions)
    return {"class": name, "index": index, "n": n, "requests": requests, "seeds": [1, requests],
            "mean": round(float(f.mean()), 4), "sd": round(float(f.std(ddof=1)) if len(f) > 1 else 0.0, 4),
            "min": round(float(f.min()), 4), "max": round(float(f.max()), 4),
            "per_request": [round(v, 4) for v in fractions],
            "median_request_seconds": round(float(np.median(seconds)), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="conditional .onnx model written by 'serving export'")
    ap.add_argument("--class", dest="classes", action="append", default=None, metavar="NAME",
                    help="class to ask for (repeatable; default: Trouser)")
    ap.add_argument("--all-classes", action="store_true", help="ask for every class of the model in turn")
    ap.add_argument("--n", type=int, default=16, help="samples per request (default: 16)")
    ap.add_argument("--requests", type=int, default=20, help="requests per class, seeds 1..R (default: 20)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the server (default: 1)")
    ap.add_argument("--dataset", default="fashion-mnist", help="dataset of the judge (default: fashion-mnist)")
    ap.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                    help="the judge (None: the one for --dataset); use the one the model was exported with")
    ap.add_argument("--force-classifier", action="store_true", help="accept a judge trained on another dataset")
    ap.add_argument("--min-mean", type=float, default=0.0, help="exit 1 if a class's mean fraction is below this")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mustangs.judge import classifier_store

    classifier, record = classifier_store.load_checked(args.classifier, args.dataset, "cpu", args.force_classifier)
    print(f"judge: {record['name']} ({record['dataset']}, sha256 {record['sha256'][:12]}…)")
    port = free_port()
    proc = start_server(Path(args.model), port, max(args.n, 16), args.threads)
    try:
        info = json.loads(post(port, "/info", {})[0])
        if not info.get("conditional"):
            raise SystemExit(f"{args.model} is not a conditional model (/info says conditional: false)")
        names = list(info["classes"])
        asked = names if args.all_classes else (args.classes or ["Trouser"])
        unknown = [c for c in asked if c not in names]
        if unknown:
            raise SystemExit(f"unknown class(es) {unknown}; the model's classes are {names}")
        rows = [check_class(port, c, names.index(c), args.n, args.requests, classifier) for c in asked]
    finally:
        stop_server(proc)

    print(f"\n{args.model}: {len(info['generators'])} generators; {args.requests} requests x {args.n} samples "
          f"per class through POST /sample (labels {{CLASS: {args.n}}}), seeds 1..{args.requests}; chance {1 / len(names):.3f}")
    print(f"{'class':<12} {'mean':>6} {'sd':>6} {'min':>6} {'max':>6} {'s/request':>9}")
    for r in rows:
        print(f"{r['class']:<12} {r['mean']:>6.3f} {r['sd']:>6.3f} {r['min']:>6.3f} {r['max']:>6.3f} "
              f"{r['median_request_seconds']:>9.3f}")
    result = {"model": str(args.model), "judge": record["name"], "generators": len(info["generators"]),
              "classes": names, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    ok = all(r["mean"] >= args.min_mean for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
