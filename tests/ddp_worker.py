"""compress_classifier with additions for tests/test_distributed.py: a model without BatchNorm or dropout
(per-rank batch statistics and per-rank dropout masks would make a DDP step differ from a single-process step
by design); a small BatchNorm model and its "ghost" twin for one process, whose BatchNorm computes what DDP
ranks compute; and a JSON file per rank with every step's (images, mean loss) as this rank's meter saw them.

Usage: [torchrun ...] tests/ddp_worker.py STEPS_PREFIX compress_classifier-arguments...
"""
import contextlib
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from kd_plugin.cli.compress_classifier import main
from kd_plugin.engine.distributed import exit_process
from kd_plugin.engine.meters import EpochMeter
from kd_plugin.models import register_model


@register_model
def plain_cnn_test_cifar(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, num_classes))


GHOST_CHUNK = 4  # the images per rank of the DDP run the ghost model stands in for


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises each chunk of GHOST_CHUNK images with that chunk's own statistics
    and updates its running statistics from the first chunk only: in one process, what 2 DDP ranks holding a chunk
    each compute (each rank normalises its share; DDP broadcasts rank 0's buffers before every forward)."""

    def forward(self, x):
        if not self.training or len(x) <= GHOST_CHUNK:
            return super().forward(x)
        first, *others = x.split(GHOST_CHUNK)
        return torch.cat([super().forward(first)] + [F.batch_norm(chunk, None, None, self.weight, self.bias, True,
                                                                  0.0, self.eps) for chunk in others])


def _bn_cnn(batchnorm, num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), batchnorm(8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1, bias=False), batchnorm(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, num_classes))


@register_model
def bn_cnn_test_cifar(num_classes=10):
    return _bn_cnn(nn.BatchNorm2d, num_classes)


@register_model
def ghost_bn_cnn_test_cifar(num_classes=10):
    return _bn_cnn(GhostBatchNorm2d, num_classes)


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
    # as the console entry point ends a rank (cli_entry without argv): a rank that joined a gloo group must not
    # reach interpreter finalization, where freeing the group's C++ work objects can abort it (SIGABRT, exit -6)
    exit_process(run(sys.argv[1], sys.argv[2:]))
