"""The trade-off front: mixtures that no other mixture beats on both of two objectives.

``ensembler front POOL --objectives tvd,fid`` answers "how much FID do I pay for class balance?"
with every Pareto-optimal mixture instead of one weighted sum chosen in advance:

1. Scalarise: for α = 0, 1/(P−1), …, 1 minimise (1−α)·ô₁ + α·ô₂ with CMA-ES (each objective
   ô normalised by its range over the single generators and the uniform mixture), through the
   same ask/tell search and exact statistics as ``ensembler optimize``.
2. Archive every mixture evaluated on the way (plus each single generator, the uniform mixture
   and, for ``tvd``, the exact LP optimum of :mod:`ensembler.mixture_math`) and keep the
   non-dominated ones. The archive also finds front points in non-convex stretches that no
   weighted sum reaches.
3. Thin the front to at most ``max_points`` points spread evenly along it (both ends kept).

``front.json`` holds every kept point as an ensemble (members, weights, estimated metrics,
size); ``serving export front.json --point I`` exports one of them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mustangs.errors import UserError
from mustangs.io.atomic import write_text_atomic

from ensembler.objectives import METRICS, MixtureObjective, Term

FRONT_FORMAT = "mustangs-front/1"


def parse_objectives(text: str) -> tuple[str, str]:
    """``"tvd,fid"`` → ``("tvd", "fid")``: exactly two different metrics from :data:`METRICS`."""
    names = tuple(p.strip().lower() for p in str(text).split(",") if p.strip())
    if len(names) != 2 or len(set(names)) != 2 or any(n not in METRICS for n in names):
        raise UserError(f"--objectives needs two different metrics separated by a comma, e.g. tvd,fid; "
                        f"legal metrics: {', '.join(METRICS)} (got {text!r})")
    return names  # type: ignore[return-value]


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Indices of the Pareto-optimal rows of ``points [N, 2]`` (both minimised), sorted by the first objective.

    Among rows with equal values only the first is kept.
    """
    order = np.lexsort((points[:, 1], points[:, 0]))
    keep, best = [], np.inf
    for i in order:
        if points[i, 1] < best:
            keep.append(i)
            best = points[i, 1]
    return np.array(keep, dtype=np.int64)


def thin(points: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` rows of a front (sorted along it), evenly spread in normalised
    arc length; the two ends are always kept."""
    n = len(points)
    if n <= max_points:
        return np.arange(n)
    span = points.max(0) - points.min(0)
    z = (points - points.min(0)) / np.where(span > 0, span, 1.0)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(z, axis=0), axis=1))])
    marks = np.linspace(0, arc[-1], max_points)
    idx = np.unique(np.searchsorted(arc, marks).clip(0, n - 1))
    return idx


@dataclass
class FrontResult:
    """Front points (weights over the pool and their two objective values) and how they were found."""

    objectives: tuple[str, str]
    weights: np.ndarray               # [P, K] on the simplex
    values: np.ndarray                # [P, 2] objective losses (``is`` as −IS)
    evaluations: int
    seconds: float
    references: dict = field(default_factory=dict)  # singles / uniform values for the plot


def compute_front(objective: MixtureObjective, objectives: tuple[str, str], *, scalarisations: int = 11,
                  budget: int = 400, seed: int = 0, max_size: int | None = None, max_points: int = 25,
                  param: str = "clip", progress=None) -> FrontResult:
    """The Pareto front of ``objectives`` over mixtures of the objective's generators (see module doc).

    ``objective`` must have been built with both metrics among its terms (any coefficients).
    ``progress`` (see :mod:`mustangs.console.progress`): one bar over all scalarisations' evaluations (plain
    lines in logs), not one per search.
    """
    from mustangs.console.progress import progress_bar

    from ensembler.methods import make_method
    from ensembler.mixture_math import solve_tvd
    from ensembler.optimize import search

    start = time.perf_counter()
    K = objective.K
    cap = max_size if (max_size is not None and max_size < K) else None
    archive_w: list[np.ndarray] = []
    archive_v: list[np.ndarray] = []

    def losses(ws: np.ndarray) -> np.ndarray:
        out = objective.losses(ws)
        return np.stack([out[objectives[0]], out[objectives[1]]], 1)

    # References: every single generator and (when allowed) the uniform mixture.
    singles = np.eye(K)
    ref = [singles]
    if cap is None:
        ref.append(np.full((1, K), 1.0 / K))
    if "tvd" in objectives:
        lp = solve_tvd(objective.hist, objective.target)
        if cap is None or np.count_nonzero(lp) <= cap:
            ref.append(lp[None])
    ref_w = np.concatenate(ref)
    ref_v = losses(ref_w)
    archive_w.append(ref_w)
    archive_v.append(ref_v)
    lo, hi = ref_v.min(0), ref_v.max(0)
    scale = np.where(hi - lo > 0, hi - lo, 1.0)
    evals = len(ref_w)

    if K > 1:
        alphas = np.linspace(0.0, 1.0, max(2, int(scalarisations)))
        with progress_bar(total=len(alphas) * budget, desc="front", unit="eval", progress=progress,
                          ticker=True) as bar:
            for i, alpha in enumerate(alphas):
                coef = np.array([1.0 - alpha, alpha])
                bar.set_postfix_str(f"scalarisation {i + 1}/{len(alphas)} ({objectives[0]} weight {1 - alpha:.2f})")

                def scalar(ws: np.ndarray, coef=coef) -> np.ndarray:
                    v = losses(ws)
                    archive_w.append(np.asarray(ws, np.float64).copy())
                    archive_v.append(v)
                    bar.update(len(v))
                    return ((v - lo) / scale) @ coef

                method = make_method("cma", K, seed=seed + i, budget=budget, param=param, max_size=cap)
                result = search(scalar, method, K, budget, cap, progress=False)
                evals += result.evaluations
    W = np.concatenate(archive_w)      # searched points come decoded (capped at max_size) from search()
    V = np.concatenate(archive_v)
    front = non_dominated(V)
    front = front[thin(V[front], max_points)]
    refs = {"singles": ref_v[:K].tolist()}
    if cap is None:
        refs["uniform"] = ref_v[K].tolist()
    return FrontResult(objectives, W[front], V[front], evals, time.perf_counter() - start, refs)


# --------------------------------------------------------------------------- the file

def front_terms(objectives: tuple[str, str]) -> tuple[Term, ...]:
    """An objective over both metrics (its coefficients do not matter: the front uses the raw losses)."""
    return tuple(Term(1.0, m) for m in objectives)


def front_json(result: FrontResult, objective: MixtureObjective, pools, meta: dict, base: Path) -> dict:
    """The ``front.json`` document: one ensemble per front point (member paths relative to ``base``)."""
    points = []
    for i, (w, v) in enumerate(zip(result.weights, result.values)):
        ensemble = pools.ensemble(w)
        metrics = objective.report(w)
        metrics.pop("objective", None)
        points.append({
            "index": i,
            "size": int(np.count_nonzero(w)),
            "objectives": {result.objectives[0]: float(v[0]), result.objectives[1]: float(v[1])},
            "metrics": {"estimated": metrics},
            "pool_weights": {c.id: float(x) for c, x in zip(pools.candidates, w)},
            "members": ensemble.members_json(base),
        })
    return {"format": FRONT_FORMAT, "network": pools.spec.to_json(), **meta,
            "objectives": list(result.objectives), "evaluations": result.evaluations,
            "seconds": round(result.seconds, 3), "references": result.references, "points": points}


def save_front(doc: dict, path: str | Path) -> None:
    """Write ``front.json`` atomically."""
    write_text_atomic(Path(path), json.dumps(doc, indent=2))


def read_front(path: str | Path):
    """Read and check a ``front.json`` → :class:`ensembler.schema.FrontDoc` (``UserError`` for a missing,
    foreign, corrupt or malformed file; the bounded JSON reader and the schema apply)."""
    from mustangs.io.loaders import read_document

    from ensembler.schema import FrontDoc

    return read_document(path, "front file", FRONT_FORMAT, FrontDoc)[1]


def load_front_point(path: str | Path, index: int):
    """Point ``index`` of a ``front.json`` as an :class:`ensembler.ensemble.Ensemble` (schema, pool manifests
    and hashes checked, as for ``ensemble.json``)."""
    from ensembler.ensemble import Ensemble

    path = Path(path)
    doc = read_front(path)
    n = len(doc.points)
    if not isinstance(index, int) or not 0 <= index < n:
        raise UserError(f"--point {index} is out of range: {path} has points 0..{n - 1}")
    point = doc.points[index]
    meta = {"dataset": doc.dataset or "", "method": "front", "objective": ",".join(doc.objectives),
            "target": doc.target, "target_distribution": doc.target_distribution, "max_size": doc.max_size,
            "seed": doc.seed, "statistics": doc.statistics, "classifier": doc.classifier or None,
            "merged": doc.merged, "front_point": index, "metrics": point.metrics, "pools": doc.pools}
    return Ensemble.from_members(doc.network, point.members, path.parent, f"{path} point {index}",
                                 {k: v for k, v in meta.items() if v is not None})


def plot_front(doc: dict, path: str | Path, title: str = "") -> None:
    """Objective 1 against objective 2 for every front point, coloured by ensemble size (PNG, atomic)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mustangs.io.atomic import write_bytes_atomic

    o1, o2 = doc["objectives"]
    pts = doc["points"]
    x = np.array([p["objectives"][o1] for p in pts])
    y = np.array([p["objectives"][o2] for p in pts])
    size = np.array([p["size"] for p in pts])
    refs = doc.get("references", {})
    label = {"tvd": "tvd_cls (distance to the target class mix)", "fid": "fid_cls", "is": "−is_cls",
             "recall": "1 − recall_cls", "coverage": "1 − coverage_cls"}
    sizes = np.arange(size.min(), size.max() + 1)
    cmap = plt.get_cmap("viridis", len(sizes))
    norm = matplotlib.colors.BoundaryNorm(np.arange(sizes[0] - 0.5, sizes[-1] + 1.5), cmap.N)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=100, gridspec_kw={"width_ratios": [1, 1.25]})
    for ax, zoom in zip(axes, (False, True)):
        if not zoom and refs.get("singles"):
            s = np.asarray(refs["singles"])
            ax.scatter(s[:, 0], s[:, 1], marker="x", color="0.55", label="single generators", zorder=1)
        if refs.get("uniform") and (not zoom):
            ax.scatter([refs["uniform"][0]], [refs["uniform"][1]], marker="s", facecolor="none", edgecolor="0.3",
                       label="uniform mixture", zorder=1)
        ax.plot(x, y, color="0.7", lw=1, zorder=2)
        sc = ax.scatter(x, y, c=size, cmap=cmap, norm=norm, s=34 if zoom else 18, zorder=3, edgecolor="k",
                        linewidth=0.3, label="front (Pareto-optimal mixtures)")
        if zoom:
            step = max(1, len(pts) // 12)
            for p, xi, yi in list(zip(pts, x, y))[::step]:
                ax.annotate(str(p["index"]), (xi, yi), textcoords="offset points", xytext=(5, 3), fontsize=8)
            ax.set_title("the front (point numbers for --point)", fontsize=10)
        else:
            ax.set_title(title or f"Pareto front {o1} vs {o2} ({len(pts)} ensembles)", fontsize=10)
            ax.legend(fontsize=8, loc="best")
        ax.set_xlabel(label.get(o1, o1))
        ax.set_ylabel(label.get(o2, o2))
        ax.grid(alpha=0.3)
    cb = fig.colorbar(sc, ax=axes[1], ticks=sizes if len(sizes) <= 12 else None)
    cb.set_label("ensemble size (generators with weight > 0)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def run_front(pool_paths: Sequence[str], objectives: tuple[str, str], evaluator_fn: Callable, cache=None, *,
              target: str | None = None, scalarisations: int = 11, budget: int = 400, seed: int = 0,
              max_size: int | None = None, max_points: int = 25, samples: int = 10_000, stats_seed: int = 0,
              batch_size: int = 1000, diversity_samples: int = 1000, out: str | Path = "front.json", progress=None,
              log: Callable[[str], None] = print) -> dict:
    """Pools → statistics → front → the ``front.json`` document (not yet written).

    ``evaluator_fn(dataset)`` supplies the judge (``--classifier``, checked against the pools'
    dataset) and, when there, the real test split; ``recall``/``coverage`` objectives use cached
    per-generator feature samples (``diversity_samples`` each), as in ``ensembler optimize``.
    """
    from ensembler.optimize import checked_target, sources_of
    from ensembler.pools import open_pools
    from ensembler.stats import pool_stats

    pools = open_pools(pool_paths)
    evaluator = evaluator_fn(pools.dataset)   # refuses a wrong classifier before anything else is said
    sample_terms = [m for m in objectives if m in ("recall", "coverage")]
    if sample_terms and not evaluator.has_real_features:
        raise UserError(f"objective {', '.join(sample_terms)} needs features of the real {pools.dataset} test split "
                        f"({evaluator.missing_real or 'not available'}); pass --data-dir")
    if sample_terms and not diversity_samples:
        raise UserError(f"objective {', '.join(sample_terms)} needs --diversity-samples > 0")
    t = checked_target(pools, evaluator, target, log, "fid is not reported (pass --data-dir to get it)")
    stats = pool_stats(sources_of(pools), evaluator, samples, stats_seed, batch_size, cache, progress=progress,
                       log=log)
    diversity = None
    if diversity_samples and evaluator.has_real_features:
        from ensembler.diversity import mixture_diversity

        diversity = mixture_diversity(sources_of(pools), evaluator, diversity_samples, stats_seed, batch_size, cache,
                                      progress=progress, log=log)
    objective = MixtureObjective(stats, evaluator.real, front_terms(objectives), t, diversity=diversity)
    result = compute_front(objective, objectives, scalarisations=scalarisations, budget=budget, seed=seed,
                           max_size=max_size, max_points=max_points, progress=progress)
    meta = {"dataset": pools.dataset, "pools": [str(p.root) for p in pools.pools], "target": target or "uniform",
            "target_distribution": [round(float(x), 10) for x in t], "max_size": max_size, "seed": seed,
            "scalarisations": scalarisations, "budget_per_scalarisation": budget,
            "statistics": {"samples_per_generator": samples, "seed": stats_seed,
                           "classifier_sha256": evaluator.classifier_hash,
                           "diversity_samples": diversity.m if diversity is not None else 0},
            "classifier": evaluator.record, "merged": pools.merged}
    return front_json(result, objective, pools, meta, Path(out).resolve().parent)


__all__ = ["FRONT_FORMAT", "parse_objectives", "non_dominated", "thin", "compute_front", "FrontResult",
           "front_json", "save_front", "read_front", "load_front_point", "plot_front", "run_front"]
