"""A cheap takeover simulation that chose the study's slower-takeover variants (issue 19).

No networks: every cell holds a quality q and a founder lineage. Per generation each cell runs a
noisy size-2 tournament over its von Neumann neighbourhood (or itself alone on a generation without
migration), the winner's copy improves by N(0.3, 0.5) and replaces the centre when better (elitist);
a copy of another lineage needs a draw below ``p`` first. Prints the mean number of founders with
descendants after 20 generations over 200 seeds.

    python benchmarks/takeover_sim.py
"""

from __future__ import annotations

import numpy as np


def neighbourhoods(h: int, w: int) -> list[list[int]]:
    """Each cell followed by its distinct N, S, W, E neighbours on an h×w torus."""
    out = []
    for i in range(h * w):
        r, c = divmod(i, w)
        out.append(list(dict.fromkeys([i, ((r - 1) % h) * w + c, ((r + 1) % h) * w + c, r * w + (c - 1) % w,
                                       r * w + (c + 1) % w])))
    return out


def lineages_left(h: int, w: int, generations: int, k: int = 1, p: float = 1.0, seed: int = 0) -> int:
    """Founders with descendants after ``generations`` (migration every ``k``, foreign replacement ``p``)."""
    rng = np.random.default_rng(seed)
    nb = neighbourhoods(h, w)
    q, lin = rng.normal(size=h * w), np.arange(h * w)
    for g in range(1, generations + 1):
        q0, l0 = q.copy(), lin.copy()
        for c in range(h * w):
            sub = nb[c] if g % k == 0 else [c]
            cont = rng.choice(sub, size=min(2, len(sub)), replace=False)
            win = cont[np.argmax(q0[cont] + rng.normal(size=len(cont)))]
            new = q0[win] + 0.3 + 0.5 * rng.normal()
            if new > q0[c] and (l0[win] == l0[c] or p >= 1 or rng.random() < p):
                q[c], lin[c] = new, l0[win]
    return len(set(lin.tolist()))


if __name__ == "__main__":
    for side in (3, 5, 8):
        row = []
        for name, kw in (("reference", {}), ("k=4", {"k": 4}), ("p=0.3", {"p": 0.3}), ("k=4 p=0.3", {"k": 4, "p": 0.3}),
                         ("k=5 p=0.2", {"k": 5, "p": 0.2})):
            row.append(f"{name}: {np.mean([lineages_left(side, side, 20, seed=s, **kw) for s in range(200)]):.2f}")
        print(f"{side}x{side}: " + " | ".join(row))
