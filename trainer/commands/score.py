"""``trainer score``: FID / TVD / IS / precision-recall-density-coverage / KID of a sample set, on a classifier.

    trainer score --real fashion-mnist:test --fake fashion-mnist:train --samples 10000 --json
    trainer score --fake samples.npy --target "0:0.5,3:0.5" --metrics tvd      # no real data needed
    trainer score --fake samples.npy --classifier ~/my-mnist-clf --metrics tvd,is
    trainer score --fake noise                       # uniform-noise baseline

Metric names carry their protocol: fid_cls10k is the Fréchet distance on the classifier's
features with 10k fake samples (not comparable to Inception FID, which is fid_incep10k).
precision/recall/density/coverage (k=5 nearest neighbours) and kid compare the fake features
with as many real ones. Only fid, prdc, kid and --target real read real data (the real
statistics and features are cached under $MUSTANGS_CACHE/stats/); tvd against a uniform or
given target and is need the classifier alone.
"""

from __future__ import annotations

import json
import sys

METRICS = ("fid", "tvd", "is", "prdc", "kid")
#: Metrics that compare with real data (the others need the classifier only).
NEEDS_REAL = ("fid", "prdc", "kid")


def _parse_metrics(text: str) -> list[str]:
    from mustangs.errors import UserError

    chosen = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METRICS]
    if bad or not chosen:
        raise UserError(f"unknown metric {', '.join(bad) or repr(text)}; legal metrics: {', '.join(METRICS)} "
                        f"(comma-separated; prdc = precision, recall, density, coverage)")
    return list(dict.fromkeys(chosen))


def _real_source(args) -> tuple[str, str]:
    """The real split: ``--real``, else the test split of the classifier's (or fashion-mnist's) dataset."""
    from mustangs.data.datasets import parse_source

    if args.real:
        return parse_source(args.real)
    if args.classifier:
        from mustangs.judge import classifier_store

        return classifier_store.resolve(args.classifier).dataset, "test"
    return "fashion-mnist", "test"


def run_score(args) -> dict:
    """Compute the requested metrics; returns the JSON-able result (metrics + what was compared)."""
    import numpy as np
    import torch

    from mustangs.data.datasets import parse_source
    from mustangs.errors import UserError
    from mustangs.judge import classifier_store
    from mustangs.judge.evaluation import is_dataset_source, load_samples, real_stats, source_stats, stats_of_tensor
    from mustangs.judge.metrics import parse_target, protocol_suffix, score

    metrics = _parse_metrics(args.metrics)
    if args.samples < 2:
        raise UserError(f"--samples must be at least 2 (got {args.samples})")
    real_name, real_split = _real_source(args)
    if args.inception:
        from mustangs.judge.inception import require_weights

        require_weights()  # fail at once, before any work
    if args.inception and args.classifier is None:
        try:
            classifier_store.resolve(None, real_name)
        except UserError as exc:   # e.g. cifar10, image-folder: Inception is the yardstick there
            print(f"note: {str(exc).split(';')[0]}; computing the Inception metrics only", file=sys.stderr)
            return _inception_only(args, real_name, real_split)
    classifier, record = classifier_store.load_checked(args.classifier, real_name, force=args.force_classifier,
                                                       what="the real split")
    if args.fake != "noise" and is_dataset_source(args.fake):
        fake_name, _ = parse_source(args.fake)
        record["forced"] |= classifier_store.check_dataset(classifier.ref, fake_name, args.force_classifier,
                                                           what=f"--fake {args.fake}")
    target_spec = (args.target or "uniform").strip()
    needs_real = bool(set(metrics) & set(NEEDS_REAL)) or target_spec == "real" or args.inception
    real = real_stats(real_name, real_split, classifier, data_dir=args.data_dir) if needs_real else None
    target = parse_target(target_spec, classifier.num_classes, None if real is None else real.hist)
    per_sample = bool({"prdc", "kid"} & set(metrics)) or args.inception
    shape = tuple(classifier.input_shape)
    fake_x = None
    if per_sample:
        fake_x = load_samples(args.fake, shape, args.samples, seed=args.seed, data_dir=args.data_dir)
        fake = stats_of_tensor(classifier, fake_x)
    else:
        fake = source_stats(args.fake, classifier, args.samples, seed=args.seed, data_dir=args.data_dir)
    if fake.n < args.samples:
        print(f"note: {args.fake} holds only {fake.n} samples; metrics use all of them", file=sys.stderr)
    result: dict = dict(score(fake, real, target, [m for m in metrics if m in ("fid", "tvd", "is")]))
    if {"prdc", "kid"} & set(metrics):
        from mustangs.judge.features import features_of_tensor, real_features
        from mustangs.judge.manifold import RealManifold, diversity_scores

        if fake.n <= 5:
            raise UserError(f"precision/recall/density/coverage and kid need more than 5 samples (got {fake.n})")
        real_f = real_features(real_name, real_split, classifier, fake.n, data_dir=args.data_dir)
        result.update(diversity_scores(RealManifold.of(real_f), features_of_tensor(classifier, fake_x),
                                       f"cls{protocol_suffix(fake.n)}", metrics))
    if args.inception:
        from mustangs.judge.inception import default_device, inception_scores, load_inception, real_inception_features

        model = load_inception(default_device())
        real_incep = real_inception_features(model, real_name, real_split,
                                             lambda: load_samples(f"{real_name}:{real_split}", shape, None,
                                                                  data_dir=args.data_dir))
        result.update(inception_scores(model, real_incep, fake_x))
    from mustangs.data.datasets import POINT_DATASETS

    if real_name in POINT_DATASETS:   # 2-D toys: modes covered, high-quality share, TVD over modes
        from mustangs.data.datasets import point_modes
        from mustangs.judge.metrics import mode_scores, mode_stats

        pts = load_samples(args.fake, (2,), args.samples, seed=args.seed, data_dir=args.data_dir)
        result.update(mode_scores(mode_stats(pts.to(torch.float32).numpy(), *point_modes(real_name))))
    result.update({
        "real": f"{real_name}:{real_split}" if needs_real else None,
        "fake": args.fake,
        "samples": int(fake.n),
        "target": target_spec,
        "classifier": record,
        "classifier_sha256": record["sha256"],
    })
    if "tvd" in metrics:
        result["fake_hist"] = [round(float(v), 6) for v in np.asarray(fake.hist)]
    return result


def _inception_only(args, real_name: str, real_split: str) -> dict:
    """``fid_incep*``/``kid_incep*`` of the fake samples when no classifier exists for the dataset."""
    from mustangs.data.datasets import load_dataset
    from mustangs.judge.evaluation import load_samples, subset_indices
    from mustangs.judge.inception import default_device, inception_scores, load_inception, real_inception_features

    real = load_dataset(real_name, real_split, data_dir=args.data_dir)
    fake_x = load_samples(args.fake, real.sample_shape, args.samples, seed=args.seed, data_dir=args.data_dir)
    model = load_inception(default_device())

    def real_x():
        idx = subset_indices(len(real), args.samples, real.labels)
        return real.data if idx is None else real.data[idx]

    result = inception_scores(model, real_inception_features(model, real_name, real_split, real_x, args.samples),
                              fake_x)
    result.update({"real": f"{real_name}:{real_split}", "fake": args.fake, "samples": int(fake_x.shape[0]),
                   "target": None, "classifier": None, "classifier_sha256": None})
    return result


def _score(args) -> int:
    result = run_score(args)
    if args.json:
        print(json.dumps(result))
        return 0
    clf = result["classifier"]
    judge = (f"{clf['name']} ({clf['dataset']}, sha256 {clf['sha256'][:12]}…{', FORCED' if clf['forced'] else ''})"
             if clf else "none (Inception only)")
    print(f"real: {result['real'] or '(not needed)'}   fake: {result['fake']} ({result['samples']} samples)   "
          f"target: {result['target']}   classifier: {judge}")
    for key, value in result.items():
        if key.startswith(("fid_", "tvd_", "is_", "precision_", "recall_", "density_", "coverage_", "kid_")):
            print(f"  {key:<18} {value:12.4f}")
    return 0


def register(sub) -> None:
    """Add the ``score`` verb to the ``trainer`` CLI."""
    from mustangs.console.args import int_range, seed_type
    from mustangs.console.formatting import HelpFormatter
    from mustangs.names import SOURCE_HELP

    p = sub.add_parser("score", help="FID/TVD/IS of samples against a real split (classifier features)",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--real", default=None,
                   help="real dataset split DATASET:SPLIT (None: the test split of the classifier's dataset, "
                        "else fashion-mnist:test); read only for fid, prdc, kid and --target real")
    p.add_argument("--fake", required=True, help=f"samples to score: {SOURCE_HELP}")
    p.add_argument("--samples", type=int_range(2, 1_000_000), default=10000, help="number of fake samples (fewer if the source holds fewer)")
    p.add_argument("--metrics", default="fid,tvd,is,prdc,kid",
                   help=f"comma-separated subset of {','.join(METRICS)} (prdc = precision, recall, density, "
                        "coverage with k=5)")
    p.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                   help="the judge: a folder or .json of a classifier, or a NAME looked up in "
                        "$MUSTANGS_CACHE/classifiers/ then the package (None: the one for the real dataset)")
    p.add_argument("--force-classifier", action="store_true",
                   help="judge with a classifier trained on another dataset (the result records forced: true)")
    p.add_argument("--target", default="uniform",
                   help="class distribution for TVD: uniform, real (the real split's predicted histogram), "
                   "'CLASS:WEIGHT,...' (e.g. '0:0.5,3:0.5') or one weight per class")
    p.add_argument("--inception", action="store_true",
                   help="also Inception FID and KID (fid_incep*, kid_incep*); needs pytorch-fid's weights on disk, "
                        "slow on CPU")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the 'noise' source")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_score)
