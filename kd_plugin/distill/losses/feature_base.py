"""What feature-based losses share: they name modules of the student and the teacher (feature points, hooked by
``kd_plugin.distill.features``), may own trainable parts (a regressor, embeddings, a memory bank) built once the
hooked shapes are known, and return LossTerms like the logit losses.

Reference recipe (RepDistiller ``train_student.py``): CE weight 1 plus beta times the feature term, so the
policy's weights default to distill 1, student 1 and each loss carries its beta as its term's weight.
"""
from collections import namedtuple

from ...util.errors import KDPluginError
from ..features import feature_stages
from .base import DistillationLoss, DistillationLossWeights

# What a loss with trainable parts may need to know about the training split (CRD's memory bank).
TrainingData = namedtuple("TrainingData", ["num_images", "labels"])


def _is_points(value):
    if value is None:
        return True
    items = value if isinstance(value, (list, tuple)) else [value]
    return all(isinstance(v, str) and v.strip() for v in items)


POINTS = (_is_points, "module names (a list, or one string with names separated by ',' or '|')")
POINT = (lambda v: v is None or (isinstance(v, str) and v.strip() and "," not in v), "one module name")
POSITIVE_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")


def point_list(value):
    """VALUE (None, a list of names, or 'a,b' / 'a|b') as a list of names (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [v.strip() for v in value]
    return [v.strip() for v in value.replace("|", ",").split(",") if v.strip()]


def stages_or_refuse(model, loss, role):
    stages = feature_stages(model)
    if not stages:
        raise KDPluginError(f"loss {loss}: the {role} {getattr(model, 'arch', type(model).__name__)} declares no "
                            f"feature stages; name its modules with --kd-loss-arg")
    return stages


class FeatureLoss(DistillationLoss):
    """Base of a feature-based loss. A subclass implements ``points(student, teacher)`` -> (student points,
    teacher points), optionally ``build(student_features, teacher_features, data)`` -> an nn.Module of trainable
    parts (None without), and ``feature_terms(features, labels, epoch)`` -> [LossTerm]; ``exclusive_terms(epoch)``
    names the only terms that train in an epoch (FitNets' stage 1), None for all."""

    uses_features = True
    default_weights = DistillationLossWeights(distill=1.0, student=1.0)
    module = None  # trainable parts, once built

    def __call__(self, student_logits, teacher_logits, labels=None, epoch=0, features=None):
        if features is None:
            raise KDPluginError(f"loss {self.name} compares intermediate features; it needs hooked features")
        return self.feature_terms(features, labels, epoch)

    def points(self, student, teacher):
        raise NotImplementedError

    def build(self, student_features, teacher_features, data):
        return None

    def feature_terms(self, features, labels, epoch):
        raise NotImplementedError

    def exclusive_terms(self, epoch):
        return None

    def describe(self):
        args = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in self.args.items()
                         if v is not None)
        return f"{self.name}" + (f" ({args})" if args else "")
