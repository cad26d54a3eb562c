"""Writes a small, learnable CIFAR-10-format dataset (python pickles) for tests and the offline demo.

Keys are str, as the official Python-2 pickles load under ``encoding="latin1"`` (torchvision's and therefore
Distiller's reader index ``entry["data"]``); kd-plugin's own reader accepts str and bytes keys.

Each class is a smooth random colour template; images are that template, randomly shifted, plus noise,
so a small network separates the classes within an epoch or two while augmentation still matters.
"""
import os
import pickle

import numpy as np

from .cifar10 import BATCHES_DIR, CLASS_NAMES, META_FILE, TEST_FILES, TRAIN_FILES


def _templates(rng):
    coarse = rng.uniform(0, 255, size=(10, 3, 4, 4))
    return np.kron(coarse, np.ones((1, 1, 8, 8)))


def _images(rng, templates, labels, noise):
    base = templates[labels]
    shifts = rng.integers(-3, 4, size=(len(labels), 2))
    out = np.empty_like(base)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(base[i], (dy, dx), axis=(1, 2))
    out += rng.normal(0, noise, size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8).reshape(len(labels), -1)


def existing_dataset_files(root: str) -> list[str]:
    """The CIFAR-format files already under ROOT (in ROOT itself or in its cifar-10-batches-py/) that
    ``write_synthetic_cifar`` would overwrite, as paths relative to ROOT."""
    names = (*TRAIN_FILES, *TEST_FILES, META_FILE)
    candidates = [os.path.join(BATCHES_DIR, n) for n in names] + list(names)
    return [c for c in candidates if os.path.lexists(os.path.join(root, c))]


def write_synthetic_cifar(root, train_images=500, test_images=200, seed=0, noise=40.0):
    """Create ROOT/cifar-10-batches-py with data_batch_1..5, test_batch and batches.meta; return ROOT."""
    rng = np.random.default_rng(seed)
    templates = _templates(rng)
    folder = os.path.join(root, BATCHES_DIR)
    os.makedirs(folder, exist_ok=True)
    train_labels = np.arange(train_images) % 10
    rng.shuffle(train_labels)
    for i, chunk in enumerate(np.array_split(train_labels, len(TRAIN_FILES))):
        _dump(os.path.join(folder, TRAIN_FILES[i]), _images(rng, templates, chunk, noise), chunk,
              f"training batch {i + 1} of 5")
    test_labels = np.arange(test_images) % 10
    _dump(os.path.join(folder, TEST_FILES[0]), _images(rng, templates, test_labels, noise), test_labels,
          "testing batch 1 of 1")
    with open(os.path.join(folder, META_FILE), "wb") as fh:
        pickle.dump({"label_names": list(CLASS_NAMES), "num_vis": 3072, "num_cases_per_batch": len(test_labels)}, fh,
                    protocol=2)
    return root


def _dump(path, data, labels, tag):
    with open(path, "wb") as fh:
        pickle.dump({"batch_label": tag, "labels": [int(x) for x in labels], "data": data,
                     "filenames": [f"img_{i}.png" for i in range(len(labels))]}, fh, protocol=2)
