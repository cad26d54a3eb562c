"""Distillation losses behind one interface, selected by name (``loss: dkd`` / ``--kd-loss dkd``).

A new method is one module here with a ``@register_loss`` DistillationLoss subclass, imported below; a
feature-based one subclasses ``feature_base.FeatureLoss`` (fed hooked intermediate outputs by module name).
"""
from . import at, crd, dist, dkd, fitnet, kd  # noqa: F401  (registration side effects)
from .base import DistillationLoss, DistillationLossWeights, LossTerm, check_temperature, standardize
from .registry import create_loss, list_losses, loss_class, parse_loss_arg, parse_loss_spec, register_loss

__all__ = ["DistillationLoss", "DistillationLossWeights", "LossTerm", "check_temperature", "create_loss", "list_losses",
           "loss_class", "parse_loss_arg", "parse_loss_spec", "register_loss", "standardize"]
