"""The weights of JointNet's loss terms, settable from a YAML schedule's ``extensions`` section.

JointNet trains with ``head*CE(head) + vgg*CE(a1) + resnet*CE(a2) + mix*CE(a3)`` (``JointNet.training_criterion``);
all four weights default to 1.0. A schedule changes them for the whole run::

    extensions:
      joint_loss:
        class: JointNetLossWeights
        head_ce_weight: 1.0
        vgg_ce_weight: 1.0
        resnet_ce_weight: 1.0
        mix_ce_weight: 1.0

It needs no ``policies`` entry (listing it is harmless: every callback is a no-op).
"""
import math

from ..models.ensembles import JointLossWeights, JointNet
from ..protocol.config import NON_NEGATIVE, register_component
from ..protocol.policy import ScheduledTrainingPolicy
from ..util.errors import KDPluginError


class JointNetLossWeights(ScheduledTrainingPolicy):
    def __init__(self, model, head_ce_weight=1.0, vgg_ce_weight=1.0, resnet_ce_weight=1.0, mix_ce_weight=1.0):
        super().__init__()
        if not isinstance(model, JointNet):
            raise KDPluginError(f"JointNetLossWeights applies to jointnet_cifar, not {getattr(model, 'arch', model)}")
        weights = JointLossWeights(vgg=vgg_ce_weight, resnet=resnet_ce_weight, mix=mix_ce_weight, head=head_ce_weight)
        for name, value in weights._asdict().items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise KDPluginError(f"{name}_ce_weight must be a number >= 0, got {value!r}")
        if weights.head == 0:
            raise KDPluginError("head_ce_weight must be > 0: the head gets gradient only from its own CE term")
        self.weights = JointLossWeights(*(float(w) for w in weights))
        model.loss_weights = self.weights


register_component("extensions", JointNetLossWeights,
                   {f"{term}_ce_weight": NON_NEGATIVE for term in ("head", "vgg", "resnet", "mix")})
