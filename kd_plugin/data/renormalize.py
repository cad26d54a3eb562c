"""Feeding a network its own normalization when the batch was normalized for another one.

A normalized batch of 8-bit images determines its pixels exactly: ``round(x * std * 255 + mean * 255)``
recovers them (float32 rounding error is ~1e-4 of a grey level). So a batch normalized for one network
is turned into another network's view by recovering the pixels and normalizing them again, with the very
Normalizer the other network's own loader would use: bitwise the inputs it would have seen alone. Used by
the KD teacher runner (teacher and student normalized differently), the evaluation loop (a loader made for
another model) and inside Distiller (whose loader normalizes every network with mean = std = 0.5).
"""
import torch

from ..util.normalization import normalization_of
from .augment import Normalizer

_EXACT_DTYPES = (torch.float32, torch.float64)


class Renormalizer:
    """inputs normalized with SOURCE -> the same images normalized with TARGET (identity when they match)."""

    def __init__(self, source, target):
        self.source, self.target = source, target
        self.identity = source.same_as(target)
        self._from, self._to = Normalizer.of(source), Normalizer.of(target)

    def __call__(self, inputs):
        if self.identity:
            return inputs
        if inputs.dtype in _EXACT_DTYPES:
            return self._to(self._from.pixels(inputs), inputs.dtype)
        pixels = self._from.pixels(inputs.float())  # half-precision inputs: exact only up to their rounding
        return self._to(pixels, torch.float32).to(inputs.dtype)


_renormalizers = {}


def renormalizer(source, target):
    if (source, target) not in _renormalizers:
        _renormalizers[(source, target)] = Renormalizer(source, target)
    return _renormalizers[(source, target)]


def to_model_input(inputs, source, model):
    """INPUTS normalized with SOURCE, as MODEL's own normalization wants them."""
    target = normalization_of(model)
    return inputs if source.same_as(target) else renormalizer(source, target)(inputs)


def install_input_adapter(model, source):
    """Make MODEL accept inputs normalized with SOURCE (e.g. Distiller's loader): a forward pre-hook converts
    them to ``model.normalization`` on every call. Idempotent; the target follows later changes of
    ``model.normalization`` (a checkpoint loaded with another record). State_dict keys are untouched."""
    target = getattr(model, "module", model)
    target.input_source_normalization = source
    if getattr(target, "_input_adapter_hook", None) is None:
        target._input_adapter_hook = target.register_forward_pre_hook(_adapt_input)
    return model


def _adapt_input(module, args):
    if not args or not torch.is_tensor(args[0]):
        return None
    converted = to_model_input(args[0], module.input_source_normalization, module)
    return None if converted is args[0] else (converted, *args[1:])
