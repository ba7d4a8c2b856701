"""``trainer classifier``: train or evaluate the evaluation classifier (the yardstick of every metric).

    trainer classifier train --dataset fashion-mnist          # writes trainer/assets/classifier-fashion-mnist.*
    trainer classifier eval  --dataset fashion-mnist --json   # {"accuracy": ..., "dataset": ..., "sha256": ...}
"""

from __future__ import annotations

import json


def _train(args) -> int:
    import torch

    from trainer.classifier import train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    info = train_classifier(args.dataset, epochs=args.epochs, seed=args.seed, data_dir=args.data_dir,
                            out_dir=args.out, augment=not args.no_augment, batch_size=args.batch_size,
                            lr=args.lr)
    from trainer.classifier import asset_paths

    weights, meta = asset_paths(args.dataset, args.out)
    print(f"test accuracy {info['test_accuracy']:.4f}; wrote {weights} and {meta} (sha256 {info['sha256'][:16]}…)")
    return 0


def _eval(args) -> int:
    from trainer.classifier import evaluate_classifier

    result = evaluate_classifier(args.dataset, data_dir=args.data_dir, n=args.samples, folder=args.weights_dir)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['dataset']}: test accuracy {result['accuracy']:.4f} on {result['n']} images "
              f"(classifier sha256 {result['sha256'][:16]}…)")
    return 0


def register(sub) -> None:
    """Add the ``classifier`` verb (``train`` / ``eval``) to the ``trainer`` CLI."""
    from trainer.cli import HelpFormatter
    from trainer.classifier import TRAINABLE
    from trainer.cliargs import float_range, int_range, seed_type, threads_type

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
    t.add_argument("--out", default=None, help="output folder; None = the package's trainer/assets/")
    t.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    t.add_argument("--threads", type=threads_type, default=None, help="torch threads; None = torch's choice")
    t.set_defaults(func=_train)

    e = verbs.add_parser("eval", help="print the shipped classifier's test accuracy",
                         formatter_class=HelpFormatter)
    e.add_argument("--dataset", default="fashion-mnist", choices=sorted(TRAINABLE) + ["rings", "grid25"],
                   help="dataset whose classifier and test split to use")
    e.add_argument("--samples", type=int_range(1, 10_000_000), default=None, help="evaluate on the first N test images only")
    e.add_argument("--weights-dir", default=None, help="folder holding classifier-<dataset>.*; "
                   "None = the package's trainer/assets/")
    e.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_eval)
