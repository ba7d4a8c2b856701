"""Human-readable class names of the datasets that have an evaluation classifier (torch-free).

Index ``i`` is the classifier's class ``i`` (the datasets' own label order). Used where a user
names classes instead of indices, e.g. a re-purposing target ``{"Sneaker": 0.5, "Bag": 0.5}``.
"""

from __future__ import annotations

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "rings": tuple(f"mode{i}" for i in range(8)),
    "grid25": tuple(f"mode{i}" for i in range(25)),
}


def class_names(dataset: str, num_classes: int) -> list[str]:
    """The names of ``dataset``'s classes; ``"0" … "C-1"`` when the dataset has none or the count differs."""
    names = CLASS_NAMES.get(dataset)
    if names is None or len(names) != num_classes:
        return [str(i) for i in range(num_classes)]
    return list(names)


__all__ = ["CLASS_NAMES", "class_names"]
