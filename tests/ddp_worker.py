"""compress_classifier with two additions for tests/test_distributed.py: a model without BatchNorm or dropout
(per-rank batch statistics and per-rank dropout masks would make a DDP step differ from a single-process step
by design), and a JSON file per rank with every step's (images, mean loss) as this rank's meter saw them.

Usage: [torchrun ...] tests/ddp_worker.py STEPS_PREFIX compress_classifier-arguments...
"""
import contextlib
import json
import os
import sys

import torch.nn as nn

from kd_plugin.cli.compress_classifier import main
from kd_plugin.engine.meters import EpochMeter
from kd_plugin.models import register_model


@register_model
def plain_cnn_test_cifar(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, num_classes))


@contextlib.contextmanager
def recorded_steps(path):
    """Record each EpochMeter.add of a training step (those carrying 'Overall Loss') into PATH as JSON."""
    steps, add = [], EpochMeter.add

    def recording(self, batch_size, **values):
        if "Overall Loss" in values:
            steps.append([batch_size, float(values["Overall Loss"].detach())])
        return add(self, batch_size, **values)

    EpochMeter.add = recording
    try:
        yield steps
    finally:
        EpochMeter.add = add
        with open(path, "w") as fh:
            json.dump(steps, fh)


def run(prefix, argv):
    with recorded_steps(f"{prefix}.rank{os.environ.get('RANK', '0')}.json"):
        return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
