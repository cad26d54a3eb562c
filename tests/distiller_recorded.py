"""Values recorded from a real IntelLabs Distiller (``tests/fixtures/distiller/*.json``), and what the tests and
the recording share: the tiny network Distiller trained and saved, the generated data it was evaluated on, and
(for the tests) the learning rate per epoch kd-plugin's runtime gives a schedule.

Each fixture carries a ``recorded`` entry: Distiller's commit, the torch version, the command and how the
values were obtained. The recorder lives outside the repository (it needs a built Distiller); these files are
its whole output. The tests that read them (``tests/test_distiller_recorded.py``) run everywhere, without
Distiller.
"""
import contextlib
import json
import os

import torch
from torch import nn

from kd_plugin.models import registry
from kd_plugin.protocol.config import dict_config, read_schedule

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "distiller")
TINY_ARCH = "tinynet_cifar"
# The generated set Distiller's checkpoint was trained and evaluated on (kd_plugin.data.write_synthetic_cifar).
TINY_DATA = {"train_images": 100, "test_images": 40, "seed": 3}


def load_fixture(name):
    with open(os.path.join(FIXTURES, name)) as fh:
        return json.load(fh)


class TinyNet(nn.Module):
    """A CIFAR-10 classifier of 286 parameters (conv + BatchNorm + ReLU, 2x2 average pool, linear): small
    enough for its checkpoint to live in the repository."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


@contextlib.contextmanager
def tiny_arch_registered():
    """``tinynet_cifar`` in kd-plugin's zoo for the duration (removed again, so no test model leaks into it)."""

    def tinynet_cifar(**kwargs):
        return TinyNet()

    registry.register_model(tinynet_cifar)
    try:
        yield TINY_ARCH
    finally:
        registry._entrypoints.pop(TINY_ARCH, None)
        registry._default_cfgs.pop(TINY_ARCH, None)


def lr_per_epoch(path, epochs):
    """The optimizer's LR at the start of every epoch, as kd-plugin's runtime schedules it for PATH."""
    sched = read_schedule(path, distiller_components=True)
    lr_only = {"lr_schedulers": sched.get("lr_schedulers") or {},
               "policies": [p for p in sched.get("policies") or [] if "lr_scheduler" in p]}
    training = sched["training"]
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=training["lr"], momentum=training.get("momentum", 0.9))
    scheduler = dict_config(model, optimizer, lr_only)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.on_epoch_begin(epoch, optimizer)
        scheduler.on_epoch_end(epoch, optimizer, metrics={"min": 1.0, "max": 0.0})
    return lrs
