"""``trainer score``: FID / TVD / IS of a sample set against a real split, on the evaluation classifier.

    trainer score --real fashion-mnist:test --fake fashion-mnist:train --samples 10000 --json
    trainer score --fake samples.npy --target "0:0.5,3:0.5" --metrics tvd
    trainer score --fake noise                       # uniform-noise baseline

Metric names carry their protocol: fid_cls10k is the Fréchet distance on the classifier's
features with 10k fake samples (not comparable to Inception FID, which is fid_incep10k).
The real statistics (whole split) are cached under $MUSTANGS_CACHE/stats/.
"""

from __future__ import annotations

import json
import sys

METRICS = ("fid", "tvd", "is")


def _parse_metrics(text: str) -> list[str]:
    from trainer.errors import UserError

    chosen = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METRICS]
    if bad or not chosen:
        raise UserError(f"unknown metric {', '.join(bad) or repr(text)}; legal metrics: {', '.join(METRICS)} "
                        f"(comma-separated)")
    return list(dict.fromkeys(chosen))


def run_score(args) -> dict:
    """Compute the requested metrics; returns the JSON-able result (metrics + what was compared)."""
    import numpy as np
    import torch

    from trainer.classifier import load_classifier
    from trainer.data import parse_source
    from trainer.errors import UserError
    from trainer.evaluation import load_samples, real_stats, source_stats
    from trainer.metrics import parse_target, protocol_suffix, score

    metrics = _parse_metrics(args.metrics)
    if args.samples < 2:
        raise UserError(f"--samples must be at least 2 (got {args.samples})")
    real_name, real_split = parse_source(args.real)
    if args.inception:
        from trainer.inception import require_weights

        require_weights()  # fail at once, before any work
    classifier = load_classifier(real_name)
    real = real_stats(real_name, real_split, classifier, data_dir=args.data_dir)
    target = parse_target(args.target, classifier.num_classes, real.hist)
    fake = source_stats(args.fake, classifier, args.samples, seed=args.seed, data_dir=args.data_dir)
    if fake.n < args.samples:
        print(f"note: {args.fake} holds only {fake.n} samples; metrics use all of them", file=sys.stderr)
    result: dict = dict(score(fake, real, target, metrics))
    if args.inception:
        from trainer.inception import default_device, inception_moments, load_inception, real_inception_moments
        from trainer.metrics import frechet_distance

        model = load_inception(default_device())
        shape = tuple(classifier.input_shape)
        mu_r, cov_r = real_inception_moments(model, real_name, real_split,
                                             lambda: load_samples(args.real, shape, None, data_dir=args.data_dir))
        fake_x = load_samples(args.fake, shape, args.samples, seed=args.seed, data_dir=args.data_dir)
        mu_f, cov_f, n_f = inception_moments(model, fake_x)
        result[f"fid_incep{protocol_suffix(n_f)}"] = frechet_distance(mu_f, cov_f, mu_r, cov_r)
    from trainer.data import POINT_DATASETS

    if real_name in POINT_DATASETS:   # 2-D toys: modes covered, high-quality share, TVD over modes
        from trainer.data import point_modes
        from trainer.metrics import mode_scores, mode_stats

        pts = load_samples(args.fake, (2,), args.samples, seed=args.seed, data_dir=args.data_dir)
        result.update(mode_scores(mode_stats(pts.to(torch.float32).numpy(), *point_modes(real_name))))
    result.update({
        "real": f"{real_name}:{real_split}",
        "fake": args.fake,
        "samples": int(fake.n),
        "target": args.target,
        "classifier_sha256": getattr(classifier, "sha256", None),
    })
    if "tvd" in metrics:
        result["fake_hist"] = [round(float(v), 6) for v in np.asarray(fake.hist)]
    return result


def _score(args) -> int:
    result = run_score(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"real: {result['real']}   fake: {result['fake']} ({result['samples']} samples)   target: {result['target']}")
    for key, value in result.items():
        if key.startswith(("fid_", "tvd_", "is_")):
            print(f"  {key:<14} {value:12.4f}")
    return 0


def register(sub) -> None:
    """Add the ``score`` verb to the ``trainer`` CLI."""
    from trainer.cli import HelpFormatter
    from trainer.cliargs import int_range, seed_type
    from trainer.evaluation import SOURCE_HELP

    p = sub.add_parser("score", help="FID/TVD/IS of samples against a real split (classifier features)",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--real", default="fashion-mnist:test",
                   help="real dataset split DATASET:SPLIT; its classifier is the yardstick")
    p.add_argument("--fake", required=True, help=f"samples to score: {SOURCE_HELP}")
    p.add_argument("--samples", type=int_range(2, 1_000_000), default=10000, help="number of fake samples (fewer if the source holds fewer)")
    p.add_argument("--metrics", default="fid,tvd,is", help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--target", default="uniform",
                   help="class distribution for TVD: uniform, real (the real split's predicted histogram), "
                   "'CLASS:WEIGHT,...' (e.g. '0:0.5,3:0.5') or one weight per class")
    p.add_argument("--inception", action="store_true",
                   help="also Inception FID (fid_incep*); needs pytorch-fid's weights on disk, slow on CPU")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the 'noise' source")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_score)
