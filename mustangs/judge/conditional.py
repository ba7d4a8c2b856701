"""Conditional accuracy: does a class-conditional generator draw the class it is asked for?

``cond_acc_cls{n}`` (e.g. ``cond_acc_cls10k``): ``n`` samples drawn for the labels
``0, 1, …, C−1, 0, …`` (every class equally often), and the fraction of them that the judge
(the evaluation classifier) classifies as the label they were drawn for. 1 is perfect, 1/C is
what labels that are ignored give. The judge's class ``i`` is the dataset's label ``i``
(:mod:`mustangs.data.class_names`), which is what a conditional pool's ``network.classes`` name.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mustangs.errors import UserError
from mustangs.judge.evaluation import classifier_outputs
from mustangs.judge.metrics import protocol_suffix
from mustangs.pool.networks import balanced_labels


def cond_acc_key(n: int) -> str:
    """The metric's name for ``n`` samples, e.g. ``cond_acc_cls10k``."""
    return f"cond_acc_cls{protocol_suffix(n)}"


def conditional_accuracy(classifier: nn.Module, sample_fn: Callable[[torch.Tensor], torch.Tensor], n: int,
                         num_classes: int, batch_size: int = 1000) -> float:
    """The judge's accuracy on ``n`` samples drawn for balanced labels.

    ``sample_fn(labels)`` returns one sample (float in [-1, 1]) per label of the long tensor
    ``labels``; only one batch of samples is in memory at a time.
    """
    if int(classifier.num_classes) != num_classes:
        raise UserError(f"the judge has {classifier.num_classes} classes but the generators {num_classes}; "
                        "cond_acc needs the classifier of the dataset the pool was trained on")
    if n < 1:
        raise UserError(f"need at least one sample (got n={n})")
    labels = balanced_labels(n, num_classes)
    correct = 0
    for i in range(0, n, batch_size):
        y = labels[i:i + batch_size]
        with torch.no_grad():
            x = sample_fn(y)
        for _, logits in classifier_outputs(classifier, x, batch_size):
            correct += int((logits.argmax(1).cpu() == y).sum())
    return correct / n


__all__ = ["cond_acc_key", "conditional_accuracy"]
