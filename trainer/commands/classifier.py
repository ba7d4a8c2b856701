"""``trainer classifier``: train or evaluate the evaluation classifier (the yardstick of every metric).

    trainer classifier train --dataset mnist --data-dir DIR   # writes $MUSTANGS_CACHE/classifiers/mnist/
    trainer classifier train --dataset mnist --out my-clf/    # or a folder of your choice
    trainer classifier eval  --dataset fashion-mnist --json   # {"accuracy": ..., "dataset": ..., "sha256": ...}
    trainer classifier eval  --classifier my-clf/ --data-dir DIR
    trainer classifier list                                   # what --classifier NAME finds

A classifier is a .safetensors file with a .json beside it; it belongs to you, not to the
installed package. Every scoring command takes --classifier NAME_OR_DIR and looks it up in this
order: the path given, $MUSTANGS_CACHE/classifiers/NAME/, the classifiers shipped in the package
(fashion-mnist). NAME defaults to the dataset being judged.
"""

from __future__ import annotations

import json


def _train(args) -> int:
    import torch

    from mustangs.judge.classifier_training import train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    info = train_classifier(args.dataset, epochs=args.epochs, seed=args.seed, data_dir=args.data_dir,
                            out_dir=args.out, augment=not args.no_augment, batch_size=args.batch_size,
                            lr=args.lr)
    from mustangs.judge.classifier import asset_paths
    from mustangs.judge.classifier_store import default_out_dir

    weights, meta = asset_paths(args.dataset, args.out if args.out is not None else default_out_dir(args.dataset))
    print(f"test accuracy {info['test_accuracy']:.4f}; wrote {weights} and {meta} (sha256 {info['sha256'][:16]}…)")
    return 0


def _eval(args) -> int:
    from mustangs.judge.classifier_training import evaluate_classifier

    result = evaluate_classifier(args.dataset, data_dir=args.data_dir, n=args.samples, folder=args.weights_dir,
                                 classifier=args.classifier)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['dataset']}: test accuracy {result['accuracy']:.4f} on {result['n']} images "
              f"(classifier sha256 {result['sha256'][:16]}…)")
    return 0


def _list(args) -> int:
    from mustangs.judge import classifier_store

    rows = []
    for name in classifier_store.available():
        ref = classifier_store.resolve(name)
        rows.append({**ref.record(), "path": str(ref.meta) if ref.meta else None})
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else "-"
        print(f"{r['name']:<20} {r['dataset']:<14} {r['source']:<9} acc {acc:<7} {r['sha256'][:16]}  {r['path'] or ''}")
    return 0


def register(sub) -> None:
    """Add the ``classifier`` verb (``train`` / ``eval``) to the ``trainer`` CLI."""
    from mustangs.console.args import float_range, int_range, seed_type, threads_type
    from mustangs.console.formatting import HelpFormatter
    from mustangs.names import TRAINABLE

    p = sub.add_parser("classifier", help="train or evaluate the evaluation classifier", description=__doc__,
                       formatter_class=HelpFormatter)
    verbs = p.add_subparsers(dest="classifier_command", required=True, parser_class=type(p))

    t = verbs.add_parser("train", help="train the evaluation CNN and write its weights + JSON",
                         formatter_class=HelpFormatter)
    t.add_argument("--dataset", default="fashion-mnist", choices=sorted(TRAINABLE), help="dataset to train on")
    t.add_argument("--epochs", type=int_range(1, 10_000), default=8, help="passes over the training set")
    t.add_argument("--seed", type=seed_type, default=0, help="seed of initialisation, shuffling and augmentation")
    t.add_argument("--batch-size", type=int_range(1, 100_000), default=128, help="mini-batch size")
    t.add_argument("--lr", type=float_range(0.0, 10.0, lo_open=True), default=2e-3, help="peak learning rate of the one-cycle schedule")
    t.add_argument("--no-augment", action="store_true", help="disable random ±2-pixel shifts")
    t.add_argument("--out", default=None,
                   help="output folder; None = $MUSTANGS_CACHE/classifiers/DATASET/ (found by --classifier DATASET)")
    t.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    t.add_argument("--threads", type=threads_type, default=None, help="torch threads; None = torch's choice")
    t.set_defaults(func=_train)

    e = verbs.add_parser("eval", help="print the shipped classifier's test accuracy",
                         formatter_class=HelpFormatter)
    e.add_argument("--dataset", default=None, choices=sorted(TRAINABLE) + ["rings", "grid25"],
                   help="dataset whose test split to use (None: the classifier's own dataset, else fashion-mnist)")
    e.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                   help="classifier to evaluate: a folder or .json, or a NAME looked up in "
                        "$MUSTANGS_CACHE/classifiers/ then the package (None: the one for --dataset)")
    e.add_argument("--samples", type=int_range(1, 10_000_000), default=None, help="evaluate on the first N test images only")
    e.add_argument("--weights-dir", default=None, help="folder holding classifier-<dataset>.* (older form of "
                   "--classifier DIR)")
    e.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_eval)

    ls = verbs.add_parser("list", help="the classifiers --classifier NAME finds (cache, then package)",
                          formatter_class=HelpFormatter)
    ls.add_argument("--json", action="store_true", help="print one JSON list")
    ls.set_defaults(func=_list)
