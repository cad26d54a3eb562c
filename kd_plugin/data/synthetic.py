"""Writes a small, learnable CIFAR-10- or CIFAR-100-format dataset (python pickles) for tests and the offline demo.

Keys are str, as the official Python-2 pickles load under ``encoding="latin1"`` (torchvision's and therefore
Distiller's reader index ``entry["data"]``); kd-plugin's own reader accepts str and bytes keys.

Each class is a smooth random colour template; images are that template, randomly shifted, plus noise,
so a small network separates the classes within an epoch or two while augmentation still matters.
CIFAR-100's generated coarse label of fine class c is c // 5 (the real superclass map is not reproduced).
"""
import os
import pickle

import numpy as np

from . import cifar10, cifar100


def _templates(rng, num_classes):
    coarse = rng.uniform(0, 255, size=(num_classes, 3, 4, 4))
    return np.kron(coarse, np.ones((1, 1, 8, 8)))


def _images(rng, templates, labels, noise):
    base = templates[labels]
    shifts = rng.integers(-3, 4, size=(len(labels), 2))
    out = np.empty_like(base)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(base[i], (dy, dx), axis=(1, 2))
    out += rng.normal(0, noise, size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8).reshape(len(labels), -1)


def write_synthetic_cifar(root, train_images=500, test_images=200, seed=0, noise=40.0, dataset="cifar10"):
    """Create ROOT/cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta) or, for DATASET cifar100,
    ROOT/cifar-100-python (train, test, meta); return ROOT."""
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be cifar10 or cifar100, not {dataset!r}")
    names = cifar10.CLASS_NAMES if dataset == "cifar10" else cifar100.CLASS_NAMES
    rng = np.random.default_rng(seed)
    templates = _templates(rng, len(names))
    train_labels = np.arange(train_images) % len(names)
    rng.shuffle(train_labels)
    test_labels = np.arange(test_images) % len(names)
    if dataset == "cifar10":
        _write_cifar10(root, rng, templates, train_labels, test_labels, noise)
    else:
        _write_cifar100(root, rng, templates, train_labels, test_labels, noise)
    return root


def _write_cifar10(root, rng, templates, train_labels, test_labels, noise):
    folder = os.path.join(root, cifar10.BATCHES_DIR)
    os.makedirs(folder, exist_ok=True)
    for i, chunk in enumerate(np.array_split(train_labels, len(cifar10.TRAIN_FILES))):
        _dump(os.path.join(folder, cifar10.TRAIN_FILES[i]), {"labels": _ints(chunk)},
              _images(rng, templates, chunk, noise), f"training batch {i + 1} of 5")
    _dump(os.path.join(folder, cifar10.TEST_FILES[0]), {"labels": _ints(test_labels)},
          _images(rng, templates, test_labels, noise), "testing batch 1 of 1")
    _meta(os.path.join(folder, cifar10.META_FILE), {"label_names": list(cifar10.CLASS_NAMES), "num_vis": 3072,
                                                    "num_cases_per_batch": len(test_labels)})


def _write_cifar100(root, rng, templates, train_labels, test_labels, noise):
    folder = os.path.join(root, cifar100.FOLDER)
    os.makedirs(folder, exist_ok=True)
    for split, labels in (("train", train_labels), ("test", test_labels)):
        _dump(os.path.join(folder, cifar100.SPLIT_FILES[split]),
              {cifar100.FINE_LABELS: _ints(labels), cifar100.COARSE_LABELS: _ints(labels // 5)},
              _images(rng, templates, labels, noise), split)
    _meta(os.path.join(folder, cifar100.META_FILE), {"fine_label_names": list(cifar100.CLASS_NAMES),
                                                     "coarse_label_names": list(cifar100.COARSE_CLASS_NAMES)})


def _ints(labels):
    return [int(x) for x in labels]


def _meta(path, content):
    with open(path, "wb") as fh:
        pickle.dump(content, fh, protocol=2)


def _dump(path, labels, data, tag):
    with open(path, "wb") as fh:
        pickle.dump({"batch_label": tag, **labels, "data": data,
                     "filenames": [f"img_{i}.png" for i in range(len(data))]}, fh, protocol=2)
