"""kd-plugin's policies as Distiller policies: the same logic on Distiller's own ScheduledTrainingPolicy.

Distiller's CompressionScheduler checks each policy's loss with ``isinstance(..., distiller.policy.PolicyLoss)``,
so these classes build Distiller's PolicyLoss/LossComponent. Importing this module imports Distiller.
"""
from distiller.policy import LossComponent, PolicyLoss, ScheduledTrainingPolicy

from ..distill.extension import DistillationExtensionMixin
from ..distill.jointnet import JointNetLossWeights as BuiltinJointNetLossWeights
from ..distill.policy import DistillationMixin


class KnowledgeDistillationPolicy(DistillationMixin, ScheduledTrainingPolicy):
    """kd-plugin's KD (teacher in eval mode) as a ``distiller.policy.ScheduledTrainingPolicy``; same constructor
    as ``distiller.KnowledgeDistillationPolicy``."""

    policy_loss_type = PolicyLoss
    loss_component_type = LossComponent


class KnowledgeDistillationExtension(DistillationExtensionMixin, KnowledgeDistillationPolicy):
    __doc__ = DistillationExtensionMixin.__doc__


class JointNetLossWeights(BuiltinJointNetLossWeights, ScheduledTrainingPolicy):
    __doc__ = BuiltinJointNetLossWeights.__doc__


# The names a Distiller YAML schedule may use in ``class:`` once ``register_with_distiller`` has run.
EXTENSION_CLASSES = {cls.__name__: cls for cls in (KnowledgeDistillationExtension, JointNetLossWeights)}
