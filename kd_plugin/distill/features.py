"""Intermediate outputs of named modules, captured by forward hooks (torchdistill's forward-hook design): a
feature-based loss names the modules whose outputs it compares (``layer3``, ``features.7``; ``fc@in`` for the
*input* of ``fc``, e.g. the pooled embedding before a classifier), and receives those tensors by name.

A network may declare its stage ends (``feature_stages``, e.g. ``layer1..3`` of a ResNet), the defaults of
losses that compare several stages (attention transfer). Outputs are cloned as they are captured, so an
in-place operation that follows (``ReLU(inplace=True)``) cannot change what the loss sees.
"""
from collections import namedtuple

import torch.nn as nn

from ..util.errors import KDPluginError

INPUT_SUFFIX = "@in"
Features = namedtuple("Features", ["student", "teacher", "indices"])  # {name: tensor}, {name: tensor}, (N,)


def module_names(model):
    return [name for name, _ in getattr(model, "module", model).named_modules() if name]


def find_module(model, point, role="student"):
    """The module a feature point (``NAME`` or ``NAME@in``) names in MODEL, or one clear error."""
    name = point[:-len(INPUT_SUFFIX)] if point.endswith(INPUT_SUFFIX) else point
    modules = dict(getattr(model, "module", model).named_modules())
    if not name or name not in modules:
        arch = getattr(model, "arch", type(model).__name__)
        stages = feature_stages(model)
        hint = f"its stages: {', '.join(stages)}" if stages else \
            f"top-level modules: {', '.join(n for n in module_names(model) if '.' not in n)}"
        raise KDPluginError(f"{point!r} is not a module of the {role} {arch} ({hint})")
    return modules[name]


def feature_stages(model):
    """The module names of MODEL's stage ends, as it declares them (None when it does not)."""
    stages = getattr(getattr(model, "module", model), "feature_stages", None)
    return list(stages) if stages else None


def embedding_point(model):
    """The input of MODEL's last linear layer: the pooled embedding its classifier reads."""
    linears = [name for name, m in getattr(model, "module", model).named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise KDPluginError(f"{getattr(model, 'arch', type(model).__name__)} has no linear classifier whose input "
                            f"could serve as its embedding; name a module")
    return linears[-1] + INPUT_SUFFIX


class FeatureTaps:
    """Forward hooks on MODEL's modules named by POINTS, filling ``outputs`` while attached."""

    def __init__(self, model, points, role="student", training_only=False):
        self.training_only = training_only  # the student's: not during its evaluation passes
        self.points = list(dict.fromkeys(points))
        self.modules = {point: find_module(model, point, role) for point in self.points}
        self.outputs = {}
        self._handles = []

    def attach(self):
        if not self._handles:
            self._handles = [module.register_forward_hook(self._hook(point)) for point, module in self.modules.items()]
        return self

    def detach(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.outputs = {}

    def _hook(self, point):
        def capture(module, inputs, output):
            if self.training_only and not module.training:
                return
            value = inputs[0] if point.endswith(INPUT_SUFFIX) else output
            self.outputs[point] = value.clone()
        return capture

    def take(self):
        """The captured outputs, by point; a point whose module did not run is an error."""
        missing = [p for p in self.points if p not in self.outputs]
        if missing:
            raise KDPluginError(f"feature point {missing[0]!r} was not reached by the forward pass")
        outputs, self.outputs = self.outputs, {}
        return outputs
