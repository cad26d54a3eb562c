"""Distiller's policy protocol (``distiller.policy``): what happens at each training callback.

Names and signatures match Distiller's so a policy written for one runtime runs on the other.
"""
import warnings
from collections import namedtuple

import torch

PolicyLoss = namedtuple("PolicyLoss", ["overall_loss", "loss_components"])
LossComponent = namedtuple("LossComponent", ["name", "value"])


class ScheduledTrainingPolicy:
    """Base class of everything a CompressionScheduler drives; every callback is a no-op by default."""

    def __init__(self, classes=None, layers=None):
        self.classes = classes
        self.layers = layers

    def on_epoch_begin(self, model, zeros_mask_dict, meta, **kwargs):
        pass

    def on_minibatch_begin(self, model, epoch, minibatch_id, minibatches_per_epoch, zeros_mask_dict, meta,
                           optimizer=None):
        pass

    def before_backward_pass(self, model, epoch, minibatch_id, minibatches_per_epoch, loss, zeros_mask_dict,
                             optimizer=None):
        pass

    def before_parameter_optimization(self, model, epoch, minibatch_id, minibatches_per_epoch, zeros_mask_dict,
                                      meta, optimizer):
        pass

    def on_minibatch_end(self, model, epoch, minibatch_id, minibatches_per_epoch, zeros_mask_dict, optimizer):
        pass

    def on_epoch_end(self, model, zeros_mask_dict, meta, **kwargs):
        pass


def step_to_epoch(lr_scheduler, epoch):
    """``lr_scheduler.step(epoch)``, as Distiller's LRPolicy calls it: torch then sets the closed-form LR of
    EPOCH. With ``frequency > 1`` the scheduler skips epochs, and only the closed form sees the milestones it
    skipped (MultiStepLR(milestones=[2]) stepped at epochs 1, 3, 5 gives 1.0, 0.1, 0.1; the chained form
    would stay at 1.0). torch deprecates the argument (with a warning) but keeps this behaviour."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The epoch parameter", category=UserWarning)
        lr_scheduler.step(epoch)


class LRPolicy(ScheduledTrainingPolicy):
    """Steps a torch LR scheduler at the end of each scheduled epoch, as Distiller's LRPolicy does."""

    def __init__(self, lr_scheduler):
        super().__init__()
        self.lr_scheduler = lr_scheduler

    def on_epoch_end(self, model, zeros_mask_dict, meta, **kwargs):
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.lr_scheduler.step(kwargs["metrics"][self.lr_scheduler.mode])
        else:
            step_to_epoch(self.lr_scheduler, meta["current_epoch"] + 1)

    def state_dict(self):
        return self.lr_scheduler.state_dict()

    def load_state_dict(self, state):
        self.lr_scheduler.load_state_dict(state)
