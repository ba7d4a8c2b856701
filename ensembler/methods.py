"""Search methods over mixture weights, all speaking one ask/tell interface.

A method proposes raw parameter vectors (``ask() -> [P, K]``) and learns from their losses
(``tell(xs, losses)``); :func:`decode` maps raw vectors to weights on the simplex. The loop
that spends the evaluation budget lives in :mod:`ensembler.optimize`.

* ``cma``     — CMA-ES from the ``cma`` package. Its normal draws come from a private
  ``numpy.random.Generator`` (``randn`` option), so code that uses numpy's global RNG between
  ``ask`` calls cannot change its results, and it writes no log files.
* ``es``      — (1+1)-ES with the 1/5 success rule (the Lipizzaner mixture step, tuned).
* ``greedy``  — the reference system's baseline: start from the best single generator, then
  repeatedly add the generator × weight (from a grid) that lowers the loss most.
* ``uniform`` — equal weights (over the ``max_size`` best single generators when capped).

Weights live on the simplex through ``param``: ``"clip"`` (w = max(x, 0) / Σ max(x, 0), exact
zeros possible; all-non-positive → uniform) or ``"softmax"`` (w = softmax(x)). ``max_size``
keeps the largest ``max_size`` weights and renormalises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mustangs.errors import UserError

METHODS = ("cma", "es", "greedy", "uniform")
PARAMS = ("clip", "softmax")


def decode(x: np.ndarray, param: str = "clip", max_size: int | None = None) -> np.ndarray:
    """Raw parameters ``[P, K]`` (or ``[K]``) → weights on the simplex, at most ``max_size`` non-zero."""
    x = np.asarray(x, np.float64)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    if param == "clip":
        w = np.clip(x, 0, None)
        s = w.sum(1, keepdims=True)
        w = np.where(s > 0, w / np.where(s > 0, s, 1), 1.0 / x.shape[1])
    elif param == "softmax":
        e = np.exp(x - x.max(1, keepdims=True))
        w = e / e.sum(1, keepdims=True)
    elif param == "simplex":  # already weights (greedy, uniform)
        w = np.clip(x, 0, None)
        w = w / w.sum(1, keepdims=True)
    else:
        raise UserError(f"unknown weight parametrisation '{param}'; legal values: {', '.join(PARAMS)}")
    if max_size is not None and max_size < x.shape[1]:
        order = np.argsort(-w, axis=1, kind="stable")[:, max_size:]
        np.put_along_axis(w, order, 0.0, axis=1)
        w = w / w.sum(1, keepdims=True)
    return w[0] if single else w


class Method:
    """Base of the ask/tell methods: ``ask`` raw vectors, ``tell`` their losses, stop when ``done``."""

    name = "method"
    param = "simplex"     # how decode() reads this method's vectors
    partial_ok = True     # may the loop evaluate only the first rows of an ask (budget end)?

    def ask(self) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return False

    def state(self) -> dict:
        """A small JSON-able summary (step size etc.) for the convergence log."""
        return {}


# --------------------------------------------------------------------------- CMA-ES

class CMAES(Method):
    """CMA-ES over raw weights (``cma`` package), seeded, isolated from numpy's global RNG.

    When CMA-ES meets one of its own stopping rules before the budget is spent, it restarts
    from the start point with a doubled population (IPOP-CMA-ES), drawing from the same private
    generator, so the whole budget is used and runs stay reproducible.
    """

    name = "cma"
    partial_ok = False

    def __init__(self, K: int, seed: int, budget: int, param: str = "clip", popsize: int | None = None,
                 sigma0: float | None = None, max_restarts: int = 9):
        self.param, self.K, self.budget = param, K, int(budget)
        self.rng = np.random.default_rng(seed)
        self.x0 = np.full(K, 1.0 / K) if param == "clip" else np.zeros(K)
        self.sigma0 = sigma0 if sigma0 is not None else (0.5 / K if param == "clip" else 1.0)
        self.popsize = int(popsize) if popsize else 4 + int(3 * np.log(K))
        self.restarts, self.max_restarts, self.stops = 0, max_restarts, []
        self._start()

    def _start(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cma
        rng = self.rng
        opts = {
            "seed": np.nan,                                      # cma must not touch np.random's seed
            "randn": lambda *shape: rng.standard_normal(shape),  # private, seeded normal draws
            "popsize": self.popsize,
            "maxfevals": self.budget,
            "verbose": -9, "verb_disp": 0, "verb_log": 0,        # silent, no outcmaes/ files
        }
        state = np.random.get_state()   # belt and braces: leave the global RNG as we found it
        try:
            self.es = cma.CMAEvolutionStrategy(self.x0, self.sigma0, opts)
        finally:
            np.random.set_state(state)
        self._pending: list[np.ndarray] | None = None

    def ask(self) -> np.ndarray:
        if self.es.stop():               # converged early: IPOP restart with a doubled population
            self.stops.append(sorted(self.es.stop()))
            self.restarts += 1
            self.popsize *= 2
            self._start()
        self._pending = self.es.ask()
        return np.array(self._pending)

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        self.es.tell(self._pending, [float(v) for v in losses])
        self._pending = None

    @property
    def done(self) -> bool:
        return self.restarts >= self.max_restarts and bool(self.es.stop())

    def state(self) -> dict:
        return {"sigma": float(self.es.sigma), "restarts": self.restarts, "popsize": self.popsize,
                "stops": self.stops}


# --------------------------------------------------------------------------- (1+1)-ES

@dataclass
class ESState:
    """(1+1)-ES state: the parent, its loss, the step size and the success count."""

    mean: np.ndarray
    loss: float | None
    sigma: float
    successes: int = 0
    trials: int = 0


class OnePlusOneES(Method):
    """(1+1)-ES: one Gaussian child per step, kept if not worse; σ follows the 1/5 success rule.

    σ ← σ · exp((1[success] − 1/5) / d) with d = √(K + 1): it grows when more than a fifth of
    the children succeed and shrinks otherwise (Kern et al. 2004).
    """

    name = "es"

    def __init__(self, K: int, seed: int, param: str = "clip", sigma0: float | None = None):
        self.param = param
        self.rng = np.random.default_rng(seed)
        mean = np.full(K, 1.0 / K) if param == "clip" else np.zeros(K)
        self.s = ESState(mean, None, sigma0 if sigma0 is not None else (0.5 / K if param == "clip" else 1.0))
        self.damping = float(np.sqrt(K + 1))

    def ask(self) -> np.ndarray:
        if self.s.loss is None:          # evaluate the start point first
            return self.s.mean[None].copy()
        return (self.s.mean + self.s.sigma * self.rng.standard_normal(self.s.mean.size))[None]

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        x, f = np.asarray(xs)[0], float(losses[0])
        if self.s.loss is None:
            self.s.loss = f
            return
        success = f <= self.s.loss
        self.s.trials += 1
        if success:
            self.s.mean, self.s.loss = x.copy(), f
            self.s.successes += 1
        self.s.sigma *= float(np.exp((float(success) - 0.2) / self.damping))

    @property
    def done(self) -> bool:
        return self.s.sigma < 1e-12

    def state(self) -> dict:
        return {"sigma": self.s.sigma, "success_rate": self.s.successes / max(1, self.s.trials)}


# --------------------------------------------------------------------------- greedy

class Greedy(Method):
    """Greedy forward selection on a weight grid (the reference system's baseline).

    Round 0 evaluates every generator alone and keeps the best. Each later round evaluates
    ``(1 − a) w + a e_k`` for every generator k and every a in ``grid`` and keeps the best if
    it lowers the loss; it stops when nothing improves or ``max_size`` members are reached.
    """

    name = "greedy"

    def __init__(self, K: int, max_size: int | None = None, grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)):
        self.K, self.max_size, self.grid = K, (max_size or K), tuple(grid)
        self.w: np.ndarray | None = None
        self.loss = np.inf
        self._done = False

    def ask(self) -> np.ndarray:
        eye = np.eye(self.K)
        if self.w is None:
            return eye
        members = self.w > 0
        cands = []
        for k in range(self.K):
            if not members[k] and members.sum() >= self.max_size:
                continue
            for a in self.grid:
                cands.append((1 - a) * self.w + a * eye[k])
        if not cands:
            self._done = True
            return self.w[None].copy()
        return np.array(cands)

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        i = int(np.argmin(losses))
        if losses[i] < self.loss - 1e-12:
            self.w, self.loss = np.array(xs[i], np.float64), float(losses[i])
        elif self.w is not None:
            self._done = True

    @property
    def done(self) -> bool:
        return self._done


# --------------------------------------------------------------------------- uniform

class Uniform(Method):
    """Equal weights; with ``max_size`` < K, equal weights over the ``max_size`` best single generators."""

    name = "uniform"

    def __init__(self, K: int, max_size: int | None = None):
        self.K, self.max_size = K, max_size
        self.phase = 0 if (max_size is not None and max_size < K) else 1
        self._done = False

    def ask(self) -> np.ndarray:
        if self.phase == 0:
            return np.eye(self.K)
        w = np.zeros(self.K)
        w[getattr(self, "chosen", np.arange(self.K))] = 1.0
        return (w / w.sum())[None]

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        if self.phase == 0:
            self.chosen = np.argsort(np.asarray(losses), kind="stable")[: self.max_size]
            self.phase = 1
        else:
            self._done = True

    @property
    def done(self) -> bool:
        return self._done


def make_method(name: str, K: int, *, seed: int = 0, budget: int = 1000, param: str = "clip",
                max_size: int | None = None, popsize: int | None = None) -> Method:
    """Build method ``name`` for K generators (``UserError`` with the legal names otherwise)."""
    if name not in METHODS:
        raise UserError(f"unknown method '{name}'; legal values: {', '.join(METHODS)}")
    if param not in PARAMS:
        raise UserError(f"unknown weight parametrisation '{param}'; legal values: {', '.join(PARAMS)}")
    if name == "cma":
        return CMAES(K, seed, budget, param, popsize)
    if name == "es":
        return OnePlusOneES(K, seed, param)
    if name == "greedy":
        return Greedy(K, max_size)
    return Uniform(K, max_size)


__all__ = ["METHODS", "PARAMS", "decode", "Method", "CMAES", "OnePlusOneES", "Greedy", "Uniform", "make_method"]
