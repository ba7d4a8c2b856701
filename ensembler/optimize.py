"""The ensembler's pipeline: pools → statistics → search → verified ensemble.json.

:func:`search` spends an evaluation budget with any ask/tell method from
:mod:`ensembler.methods`; :func:`optimize` wires pools, statistics, objective, search and
verification together; :func:`verify` measures a mixture by fresh sampling, with a bootstrap
estimate of the sampling noise so estimated and verified metrics can be compared fairly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from mustangs.errors import UserError
from mustangs.judge.metrics import FeatureStats, parse_target, score
from mustangs.names import count

from ensembler.ensemble import Ensemble
from ensembler.methods import METHODS, Method, decode, make_method
from ensembler.objectives import MixtureObjective, describe, parse_objective, single_threaded_blas
from ensembler.pools import PoolSet, open_pools
from ensembler.stats import Evaluator, Source, StatsCache, held_out_seed, pool_stats, sample_stats


@dataclass
class SearchResult:
    """Best weights found, their loss, how many evaluations it took and the convergence history."""

    weights: np.ndarray
    loss: float
    evaluations: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (evaluations so far, best loss)
    stop: str = "budget"
    method_state: dict = field(default_factory=dict)  # e.g. CMA-ES restarts, final step size


def search(objective: Callable[[np.ndarray], np.ndarray], method: Method, K: int, budget: int,
           max_size: int | None = None, progress=None) -> SearchResult:
    """Run ``method`` until ``budget`` objective evaluations are spent (or it stops itself).

    ``objective`` maps weights ``[P, K]`` to losses ``[P]``. The best weights ever evaluated
    are returned (methods like CMA-ES do not guarantee their mean is the best point).
    """
    from mustangs.console.progress import progress_bar

    start = time.perf_counter()
    best_w, best_f, evals = np.full(K, 1.0 / K), np.inf, 0
    history: list[tuple[int, float]] = []
    stop = "budget"
    with progress_bar(total=budget, desc=f"search ({method.name})", unit="eval", progress=progress,
                      leave=False, ticker=True) as bar, single_threaded_blas():
        while evals < budget:
            if method.done:
                stop = "converged"
                break
            xs = method.ask()
            if evals + len(xs) > budget:
                if not method.partial_ok and evals > 0:
                    break
                xs = xs[: budget - evals]
            ws = decode(xs, method.param, max_size)
            fs = np.asarray(objective(ws), np.float64)
            if not np.all(np.isfinite(fs)):
                raise UserError(f"the objective returned non-finite values for weights {ws[~np.isfinite(fs)][0]}")
            method.tell(xs, fs)
            evals += len(xs)
            i = int(np.argmin(fs))
            if fs[i] < best_f:
                best_f, best_w = float(fs[i]), ws[i].copy()
            history.append((evals, best_f))
            bar.update(len(xs))
            bar.set_postfix(best=f"{best_f:.4g}")
    return SearchResult(best_w, best_f, evals, time.perf_counter() - start, _thin(history), stop, method.state())


def _thin(history: list[tuple[int, float]], keep: int = 200) -> list[tuple[int, float]]:
    if len(history) <= keep:
        return history
    idx = np.unique(np.linspace(0, len(history) - 1, keep).round().astype(int))
    return [history[i] for i in idx]


# --------------------------------------------------------------------------- verification

def ensemble_sampler(ensemble: Ensemble, seed: int, n: int, device: torch.device):
    """``sample_fn`` drawing the ensemble's components and latents once (CPU, seeded), batch by batch."""
    g = torch.Generator().manual_seed(int(seed))
    z, k = ensemble.draw(n, g)
    ensemble.to(device)
    pos = [0]

    def sample_fn(b: int) -> torch.Tensor:
        i = pos[0]
        pos[0] += b
        return ensemble.generate(z[i:i + b].to(device), k[i:i + b].to(device))

    return sample_fn


def moment_metrics(real: FeatureStats | None) -> tuple[str, ...]:
    """The moment metrics that can be reported: fid only when the real statistics are there."""
    return ("fid", "tvd", "is") if real is not None else ("tvd", "is")


def bootstrap_std(features: np.ndarray, logp: np.ndarray, real: FeatureStats | None, target: np.ndarray | None,
                  reps: int = 16, seed: int = 0) -> dict[str, float]:
    """Standard deviation of each metric under resampling of the samples (the sampling noise)."""
    rng = np.random.default_rng(seed)
    n = features.shape[0]
    C = logp.shape[1]
    vals: dict[str, list[float]] = {}
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        f, lp = features[idx], logp[idx]
        p = np.exp(lp)
        stats = FeatureStats(n, f.mean(0), f.T @ f / n, np.bincount(lp.argmax(1), minlength=C) / n,
                             p.mean(0), float((p * lp).sum(1).mean()))
        for k, v in score(stats, real, target, moment_metrics(real)).items():
            vals.setdefault(k, []).append(v)
    return {k: float(np.std(v, ddof=1)) for k, v in vals.items()}


def verify(ensemble: Ensemble, evaluator: Evaluator, n: int, seed: int, target: np.ndarray | None = None,
           batch_size: int = 1000, progress=None, noise: bool = True, diversity=None
           ) -> tuple[dict[str, float], dict[str, float]]:
    """Metrics of the ensemble by fresh sampling (``n`` samples), and their bootstrap noise.

    With ``diversity`` (a :class:`mustangs.judge.manifold.MixtureDiversity`), precision/recall/density/
    coverage/KID of the first ``diversity.m`` fresh samples against the same real features, so
    they compare one to one with the estimate from cached samples.
    """
    fn = ensemble_sampler(ensemble, seed, n, evaluator.device)
    stats, feats, logp = sample_stats(fn, evaluator, n, batch_size, keep=True, progress=progress,
                                      desc="verify")
    metrics = score(stats, evaluator.real, target, moment_metrics(evaluator.real))
    if diversity is not None and n > diversity.k:
        from mustangs.judge.manifold import diversity_scores
        from mustangs.judge.metrics import protocol_suffix

        m = min(n, diversity.m)
        metrics.update(diversity_scores(diversity.real, feats[:m], f"cls{protocol_suffix(m)}"))
    std = bootstrap_std(feats, logp, evaluator.real, target, seed=seed) if noise else {}
    return metrics, std


# --------------------------------------------------------------------------- the pipeline

@dataclass
class OptimizeOptions:
    """What ``ensembler optimize`` was asked to do (mirrors the CLI flags)."""

    objective: str = "tvd"            # metric or weighted sum: tvd | fid | is | e.g. "tvd+0.01*fid"
    target: str | None = None         # TVD target: None/"uniform" | "real" | "0:0.5,3:0.5"
    method: str = "cma"               # cma | es | greedy | uniform
    budget: int = 2000                # objective evaluations
    seed: int = 0                     # search seed (also seeds verification sampling)
    max_size: int | None = None       # at most this many generators with non-zero weight (None: no cap)
    param: str = "clip"               # weights on the simplex: clip | softmax
    samples: int = 10_000             # samples per generator for its statistics
    stats_seed: int = 0               # latent seed for the statistics (shared by all generators)
    verify_samples: int = 10_000      # fresh samples of the final ensemble (0: skip verification)
    batch_size: int = 1000            # rows per forward pass
    popsize: int | None = None        # CMA-ES population (None: cma's default 4 + 3 ln K)
    diversity_samples: int = 1000     # feature samples per generator (and real) for precision/recall/density/
                                      # coverage/KID and the recall/coverage objectives; 0: skip them
    held_out: bool = True             # True: also score the chosen weights on fresh statistics (seed
                                      # held_out_seed(stats_seed)) the search never saw -> metrics.estimated_held_out;
                                      # False: only the search's own, optimistic estimate (the old behaviour)


def check_options(opts: OptimizeOptions) -> None:
    """Refuse impossible options before any work (one line each, with the fix)."""
    parse_objective(opts.objective)
    if opts.method not in METHODS:
        raise UserError(f"unknown method '{opts.method}'; legal values: {', '.join(METHODS)}")
    if opts.param not in ("clip", "softmax"):
        raise UserError(f"unknown --param '{opts.param}'; legal values: clip, softmax")
    if opts.budget < 1:
        raise UserError(f"--budget must be at least 1 objective evaluation (got {opts.budget})")
    if opts.max_size is not None and opts.max_size < 1:
        raise UserError(f"--max-size must be at least 1 (got {opts.max_size})")
    if opts.samples < 2:
        raise UserError(f"--samples must be at least 2 (got {opts.samples}); 10000 is the protocol")
    if opts.verify_samples < 0 or opts.verify_samples == 1:
        raise UserError(f"--verify-samples must be 0 (skip) or at least 2 (got {opts.verify_samples})")
    if opts.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {opts.batch_size})")
    sample_terms = [t.metric for t in parse_objective(opts.objective) if t.metric in ("recall", "coverage")]
    if opts.diversity_samples < 0 or 0 < opts.diversity_samples <= 5:
        raise UserError(f"--diversity-samples must be 0 (skip) or more than 5 (got {opts.diversity_samples})")
    if sample_terms and not opts.diversity_samples:
        raise UserError(f"objective {', '.join(sample_terms)} needs --diversity-samples > 0")


def needs_real(opts: OptimizeOptions) -> bool:
    """Whether the objective or target cannot be computed without the real test split.

    TVD against a uniform or given target and IS need the classifier alone; fid, recall,
    coverage and ``--target real`` need real data.
    """
    terms = {t.metric for t in parse_objective(opts.objective)}
    return bool(terms & {"fid", "recall", "coverage"}) or (opts.target or "").strip() == "real"


def sources_of(pools: PoolSet) -> list[Source]:
    """The statistics layer's view of the merged pools' generators."""
    return [Source(c.id, c.sha256, pools.spec, (lambda i=i: pools.generator(i))) for i, c in enumerate(pools.candidates)]


def checked_target(pools: PoolSet, evaluator: Evaluator, target_spec: str | None, log: Callable[[str], None],
                   without_real: str) -> np.ndarray:
    """What every command does before scoring a pool: name the merged generators, check every
    member file, say what is skipped without the real test split, and parse the TVD target."""
    for line in pools.merge_lines():
        log(line)
    pools.check_all()
    if evaluator.real is None:
        log(evaluator.no_real_note(without_real))
    return parse_target(target_spec, evaluator.num_classes, None if evaluator.real is None else evaluator.real.hist)


def optimize(pool_paths: Sequence[str], opts: OptimizeOptions, evaluator_fn: Callable[[str], Evaluator],
             cache: StatsCache | None = None, progress=None, log: Callable[[str], None] = print
             ) -> tuple[Ensemble, SearchResult]:
    """Find mixture weights for ``opts.objective`` over the pools; return the ensemble (not yet saved).

    ``evaluator_fn(dataset)`` supplies the classifier and real statistics (injected so tests
    and benchmarks can use a stand-in). Nothing is written except the statistics cache.
    """
    t0 = time.perf_counter()
    check_options(opts)
    terms = parse_objective(opts.objective)
    pools = open_pools(pool_paths)
    evaluator = evaluator_fn(pools.dataset)   # refuses a wrong classifier before anything else is said
    sample_terms = [t.metric for t in terms if t.metric in ("recall", "coverage")]
    if sample_terms and not evaluator.has_real_features:
        raise UserError(f"objective {', '.join(sample_terms)} needs features of the real {pools.dataset} test split "
                        f"({evaluator.missing_real or 'not available'}); pass --data-dir")
    target = checked_target(pools, evaluator, opts.target, log, "fid and precision/recall/density/coverage/kid are "
                            "not reported (pass --data-dir to get them)")
    log(f"{count(len(pools), 'generator')} ({pools.spec.arch}) from {', '.join(map(str, pool_paths))}; "
        f"statistics of {opts.samples} samples each")

    # Statistics (once per generator, cached).
    t = time.perf_counter()
    stats = pool_stats(sources_of(pools), evaluator, opts.samples, opts.stats_seed, opts.batch_size, cache,
                       progress=progress, log=log)
    diversity = None
    if opts.diversity_samples and (evaluator.has_real_features
                                   or any(t.metric in ("recall", "coverage") for t in terms)):
        from ensembler.diversity import mixture_diversity

        diversity = mixture_diversity(sources_of(pools), evaluator, opts.diversity_samples, opts.stats_seed,
                                      opts.batch_size, cache, progress=progress, log=log)
    t_stats = time.perf_counter() - t
    objective = MixtureObjective(stats, evaluator.real, terms, target, diversity=diversity)

    # Search.
    K = len(pools)
    max_size = opts.max_size if (opts.max_size is not None and opts.max_size < K) else None
    if K == 1:
        result = SearchResult(np.ones(1), objective(np.ones(1)), 1, 0.0, [(1, objective(np.ones(1)))], "single")
    else:
        method = make_method(opts.method, K, seed=opts.seed, budget=opts.budget, param=opts.param,
                             max_size=max_size, popsize=opts.popsize)
        result = search(objective.batch, method, K, opts.budget, max_size, progress=progress)
    weights = result.weights
    if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        raise UserError(f"the search produced invalid weights {weights.tolist()}")
    estimated = objective.report(weights)
    # Every candidate's objectives side by side (estimated from the same statistics, so free): a
    # reader sees what the chosen weights trade, e.g. a better tvd for a worse fid.
    candidates = [{"name": c.id, "kind": "generator", **objective.report(np.eye(K)[i])}
                  for i, c in enumerate(pools.candidates)]
    candidates.append({"name": "uniform", "kind": "uniform", **objective.report(np.full(K, 1.0 / K))})
    candidates.append({"name": "ensemble", "kind": "ensemble", **estimated})
    log(f"search: {result.evaluations} evaluations in {result.seconds:.2f} s ({opts.method}), "
        f"loss {describe(terms)} = {result.loss:.6g}")

    # Verify by fresh sampling.
    meta = {
        "pools": [str(p.root) for p in pools.pools],
        "dataset": pools.dataset,
        "method": opts.method,
        "objective": opts.objective,
        "objective_minimised": describe(terms),
        "target": opts.target or "uniform",
        "target_distribution": [round(float(x), 10) for x in target],
        "budget": opts.budget,
        "evaluations": result.evaluations,
        "stop": result.stop,
        "method_state": result.method_state,
        "seed": opts.seed,
        "max_size": opts.max_size,
        "param": opts.param,
        "statistics": {"samples_per_generator": opts.samples, "seed": opts.stats_seed,
                       "classifier_sha256": evaluator.classifier_hash,
                       "diversity_samples": diversity.m if diversity is not None else 0},
        "classifier": evaluator.record,
        "merged": pools.merged,
        "pool_weights": {c.id: float(w) for c, w in zip(pools.candidates, weights)},
        "candidates": candidates,
    }
    ensemble = pools.ensemble(weights, meta)
    verified, noise = {}, {}
    t = time.perf_counter()
    if opts.verify_samples:
        verified, noise = verify(ensemble, evaluator, opts.verify_samples, opts.seed + 1_000_003, target,
                                 opts.batch_size, progress=progress, diversity=diversity)
    t_verify = time.perf_counter() - t
    t = time.perf_counter()
    held_out = held_out_estimate(pools, evaluator, opts, terms, target, weights, diversity is not None, cache,
                                 progress, log) if opts.held_out else {}
    t_held_out = time.perf_counter() - t
    ensemble.meta["metrics"] = {"estimated": estimated, "verified": verified, "verified_std": noise}
    if opts.held_out:
        ensemble.meta["metrics"]["estimated_held_out"] = held_out
    ensemble.meta["seconds"] = round(time.perf_counter() - t0, 3)
    ensemble.meta["timings"] = {"statistics": round(t_stats, 3), "search": round(result.seconds, 3),
                                "verify": round(t_verify, 3), "held_out": round(t_held_out, 3)}
    ensemble.meta["history"] = [[int(e), float(f)] for e, f in result.history]
    ensemble.to("cpu")
    return ensemble, result


def held_out_estimate(pools: PoolSet, evaluator: Evaluator, opts: OptimizeOptions, terms, target: np.ndarray,
                      weights: np.ndarray, with_diversity: bool, cache: StatsCache | None, progress,
                      log: Callable[[str], None]) -> dict[str, float]:
    """The chosen weights scored on statistics the search never saw (same sample counts, latent seed
    :func:`~ensembler.stats.held_out_seed`): an estimate without the search's selection bias."""
    seed = held_out_seed(opts.stats_seed)
    stats = pool_stats(sources_of(pools), evaluator, opts.samples, seed, opts.batch_size, cache,
                       progress=progress, log=lambda line: log(line.replace("statistics:", "held-out statistics:", 1)))
    diversity = None
    if with_diversity:
        from ensembler.diversity import mixture_diversity

        diversity = mixture_diversity(sources_of(pools), evaluator, opts.diversity_samples, seed, opts.batch_size,
                                      cache, progress=progress, log=None)
    return MixtureObjective(stats, evaluator.real, terms, target, diversity=diversity).report(weights)


def plot_history(history: Sequence[Sequence[float]], path, title: str = "") -> None:
    """Best loss against objective evaluations, as a PNG (written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mustangs.io.atomic import write_bytes_atomic

    h = np.asarray(history, np.float64)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(h[:, 0], h[:, 1], drawstyle="steps-post")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel("best loss")
    if np.all(h[:, 1] > 0) and h[:, 1].max() / max(h[:, 1].min(), 1e-300) > 20:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


# --------------------------------------------------------------------------- evaluate

def evaluate_table(pools: PoolSet, evaluator: Evaluator, n: int, seed: int, target: np.ndarray | None,
                   ensemble: Ensemble | None = None, cache: StatsCache | None = None, batch_size: int = 1000,
                   progress=None, diversity_samples: int = 0) -> list[dict]:
    """Rows of metrics by real sampling: every generator alone, the uniform mixture, the ensemble.

    Single generators are sampled with latent seed ``seed`` (their statistics are shared with
    the cache of ``optimize``, which holds exactly those samples' statistics); mixtures are
    sampled fresh with ``seed + 1``. With ``diversity_samples`` and real features available,
    rows also hold precision/recall/density/coverage/KID on that many samples.
    """
    rows = []
    sources = sources_of(pools)
    stats = pool_stats(sources, evaluator, n, seed, batch_size, cache, progress=progress)
    diversity = None
    diversity_samples = min(diversity_samples, n)  # mixture rows measure at most n samples: same protocol tag
    if diversity_samples and evaluator.has_real_features:
        from ensembler.diversity import mixture_diversity
        from mustangs.judge.metrics import protocol_suffix

        diversity = mixture_diversity(sources, evaluator, diversity_samples, seed, batch_size, cache,
                                      progress=progress)
        tag = f"cls{protocol_suffix(diversity.m)}"
    for i, (c, s) in enumerate(zip(pools.candidates, stats)):
        row = {"name": c.id, "kind": "single", **score(s, evaluator.real, target, moment_metrics(evaluator.real))}
        if diversity is not None:
            row.update(diversity.scores(np.eye(len(pools))[i], tag))
        rows.append(row)
    uniform = pools.ensemble(np.ones(len(pools)))
    m, _ = verify(uniform, evaluator, n, seed + 1, target, batch_size, progress=progress, noise=False,
                  diversity=diversity)
    rows.append({"name": "uniform", "kind": "uniform", **m})
    if ensemble is not None:
        m, _ = verify(ensemble, evaluator, n, seed + 1, target, batch_size, progress=progress, noise=False,
                      diversity=diversity)
        rows.append({"name": "ensemble", "kind": "ensemble", **m})
    if pools.spec.classes:   # conditional pool: does each row draw the class it is asked for?
        _add_cond_acc(rows, pools, evaluator, n, seed, uniform, ensemble, batch_size)
    return rows


def _add_cond_acc(rows: list[dict], pools: PoolSet, evaluator: Evaluator, n: int, seed: int, uniform: Ensemble,
                  ensemble: Ensemble | None, batch_size: int) -> None:
    """``cond_acc_cls{n}`` (:mod:`mustangs.judge.conditional`) on every row: single generators on
    latent seed ``seed``, mixtures on ``seed + 1`` (as the other metrics)."""
    from mustangs.judge.conditional import cond_acc_key, conditional_accuracy

    key, K, dev = cond_acc_key(n), pools.spec.num_classes, evaluator.device

    def single(g):
        rng = torch.Generator().manual_seed(seed)
        return lambda y: g(torch.randn(len(y), pools.spec.latent_dim, generator=rng).to(dev), y.to(dev))

    def mixture(ens):
        rng = torch.Generator().manual_seed(seed + 1)
        return lambda y: ens.sample(len(y), rng, labels=y)

    fns = [single(pools.generator(i).to(dev).eval()) for i in range(len(pools))]
    fns.append(mixture(uniform.to(dev)))
    if ensemble is not None:
        fns.append(mixture(ensemble.to(dev)))
    for row, fn in zip(rows, fns):
        row[key] = conditional_accuracy(evaluator.classifier, fn, n, K, batch_size)


__all__ = ["search", "SearchResult", "verify", "needs_real", "moment_metrics", "bootstrap_std", "optimize", "OptimizeOptions", "check_options",
           "plot_history", "evaluate_table", "ensemble_sampler", "sources_of"]
