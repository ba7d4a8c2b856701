"""``report.html`` of a run: grid heatmaps of per-cell fid_cls (like the grid tables of the
Lipizzaner papers), loss and learning-rate curves, Mustangs loss-choice counts, sample grids.

Everything is read back from the run folder (``metrics.jsonl``, ``pool/manifest.json``,
``samples/``), so a report can be rebuilt at any time with :func:`write_report`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from trainer.atomic import atomic_path, write_text_atomic
from trainer.losses import G_LOSSES


def read_metrics(run: str | Path) -> list[dict]:
    """The per-generation records of ``run/metrics.jsonl`` (a torn last line is ignored)."""
    out = []
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def fid_key(records: list[dict], field: str = "scores") -> str | None:
    """The protocol name of the per-generation fid (e.g. ``fid_cls1k``), if any cell was scored."""
    for rec in records:
        for cell in rec["cells"]:
            for k in cell.get(field, {}):
                if k.startswith("fid_"):
                    return k
    return None


def fid_grid(rec: dict, key: str, shape: tuple[int, int], field: str = "scores") -> np.ndarray:
    """``[H, W]`` array of one generation's per-cell fid (NaN where not scored)."""
    out = np.full(shape, np.nan)
    for cell in rec["cells"]:
        v = cell.get(field, {}).get(key)
        if v is not None:
            out[cell["cell"][0], cell["cell"][1]] = v
    return out


def _chosen(scored: list[dict], k: int = 4) -> list[dict]:
    if len(scored) <= k:
        return scored
    idx = sorted(set(np.linspace(0, len(scored) - 1, k).round().astype(int).tolist()))
    return [scored[i] for i in idx]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def _series(records: list[dict], field: str) -> tuple[list[int], dict[str, list[float]]]:
    gens = [r["generation"] for r in records]
    per: dict[str, list[float]] = {}
    for r in records:
        for c in r["cells"]:
            per.setdefault(f"({c['cell'][0]},{c['cell'][1]})", []).append(c.get(field, np.nan))
    return gens, per


def write_report(run: str | Path) -> Path:
    """Write ``run/report.html`` and its PNGs in ``run/report/``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    figdir = run / "report"
    figdir.mkdir(parents=True, exist_ok=True)
    records = read_metrics(run)
    manifest = {}
    if (run / "pool" / "manifest.json").is_file():
        manifest = json.loads((run / "pool" / "manifest.json").read_text())
    cells = [tuple(c["cell"]) for c in records[0]["cells"]] if records else []
    shape = (max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1) if cells else (1, 1)
    parts = [f"<h1>Mustangs run {html.escape(run.name)}</h1>",
             f"<p>{len(records)} generations, {len(cells)} cells on a {shape[0]}x{shape[1]} torus.</p>"]

    summary = manifest.get("summary") or {}
    if any(summary.values()):
        parts.append("<h2>Final scores (pool)</h2><table border=1 cellpadding=4><tr><th></th><th>id</th>"
                     "<th>scores</th></tr>")
        for kind in ("best_generator", "best_mixture"):
            s = summary.get(kind)
            if s:
                sc = ", ".join(f"{k}={v:.4g}" for k, v in s.items() if k != "id")
                parts.append(f"<tr><td>{kind.replace('_', ' ')}</td><td>{html.escape(s['id'])}</td><td>{sc}</td></tr>")
        parts.append("</table>")

    # heatmaps of per-cell fid for chosen generations
    key = fid_key(records)
    if key:
        scored = [r for r in records if any(key in c.get("scores", {}) for c in r["cells"])]
        chosen = _chosen(scored)
        grids = [fid_grid(r, key, shape) for r in chosen]
        vmin, vmax = np.nanmin(grids), np.nanmax(grids)
        fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.2), squeeze=False)
        for ax, r, g in zip(axes[0], chosen, grids):
            im = ax.imshow(g, cmap="viridis_r", vmin=vmin, vmax=vmax)
            for (i, j), v in np.ndenumerate(g):
                dark = (v - vmin) > 0.4 * (vmax - vmin) if vmax > vmin else True
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w" if dark else "k", fontsize=9)
            ax.set_title(f"generation {r['generation']}")
            ax.set_xticks(range(shape[1]))
            ax.set_yticks(range(shape[0]))
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=key)
        _save(fig, figdir / "heatmap.png")
        parts.append(f"<h2>Per-cell {key} of the centre generators</h2><img src='report/heatmap.png'>")
        last = scored[-1]
        g = fid_grid(last, key, shape)
        m = fid_grid(last, key, shape, "mixture_scores")
        parts.append(f"<p>Generation {last['generation']}: generator / neighbourhood mixture {key}</p>"
                     "<table border=1 cellpadding=4>")
        for i in range(shape[0]):
            parts.append("<tr>" + "".join(f"<td>{g[i, j]:.2f} / {m[i, j]:.2f}</td>" for j in range(shape[1]))
                         + "</tr>")
        parts.append("</table>")
        gens = [r["generation"] for r in scored]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for c in cells:
            ax.plot(gens, [next((x.get("scores", {}).get(key, np.nan) for x in r["cells"]
                                 if tuple(x["cell"]) == c), np.nan) for r in scored], lw=0.8, alpha=0.6,
                    label=f"cell {c}")
        best_mix = [min((x.get("mixture_scores", {}).get(key, np.inf) for x in r["cells"]), default=np.nan)
                    for r in scored]
        ax.plot(gens, best_mix, "k-", lw=2, label="best mixture")
        ax.set_xlabel("generation")
        ax.set_ylabel(key)
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
        _save(fig, figdir / "fid.png")
        parts.append(f"<h2>{key} over generations</h2><img src='report/fid.png'>")
    else:
        parts.append("<p>No fid_cls scores (no evaluation classifier for this dataset).</p>")

    # loss and lr curves
    if records:
        fig, axes = plt.subplots(2, 2, figsize=(11, 6))
        for ax, field in zip(axes.flat, ("loss_g", "loss_d", "lr_g", "lr_d")):
            gens, per = _series(records, field)
            for name, vals in per.items():
                ax.plot(gens, vals, lw=0.9, label=name)
            ax.set_title(field)
            ax.set_xlabel("generation")
        axes[0, 0].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        _save(fig, figdir / "curves.png")
        parts.append("<h2>Losses and learning rates per cell</h2><img src='report/curves.png'>")

        counts = np.zeros((len(records), len(G_LOSSES)))
        for i, r in enumerate(records):
            for c in r["cells"]:
                counts[i, G_LOSSES.index(c["loss_choice"])] += 1
        fig, ax = plt.subplots(figsize=(7, 3))
        bottom = np.zeros(len(records))
        gens = [r["generation"] for r in records]
        for j, name in enumerate(G_LOSSES):
            ax.bar(gens, counts[:, j], bottom=bottom, label=f"{name} ({int(counts[:, j].sum())})")
            bottom += counts[:, j]
        ax.set_xlabel("generation")
        ax.set_ylabel("generators")
        ax.legend(fontsize=8)
        _save(fig, figdir / "loss_choice.png")
        parts.append("<h2>Generator loss choices</h2><img src='report/loss_choice.png'>")

    samples = sorted((run / "samples").glob("gen-*.png"))
    if samples:
        parts.append("<h2>Samples (one row per cell)</h2>")
        for p in dict.fromkeys([samples[0], samples[len(samples) // 2], samples[-1]]):
            parts.append(f"<figure style='display:inline-block'><img src='samples/{p.name}' width=300>"
                         f"<figcaption>{p.stem}</figcaption></figure>")
    doc = ("<!doctype html><html><head><meta charset='utf-8'><title>Mustangs run "
           f"{html.escape(run.name)}</title></head><body style='font-family:sans-serif'>"
           + "\n".join(parts) + "</body></html>")
    write_text_atomic(run / "report.html", doc)
    return run / "report.html"
