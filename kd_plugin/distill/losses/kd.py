"""Hinton's KD, exactly as Distiller's KnowledgeDistillationPolicy computes it:
T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), batch mean; the logged "Distill Loss" is the unscaled KL."""
import torch.nn.functional as F

from .base import DistillationLoss, DistillationLossWeights, LossTerm
from .registry import register_loss


@register_loss
class KDLoss(DistillationLoss):
    name = "kd"
    default_temperature = 1.0  # Distiller's KnowledgeDistillationPolicy default
    default_weights = DistillationLossWeights()  # Distiller's (0.5, 0.5, 0)

    def terms(self, student, teacher, labels, epoch):
        log_probs = F.log_softmax(student / self.temperature, dim=1)
        targets = F.softmax(teacher / self.temperature, dim=1)
        kl = F.kl_div(log_probs, targets, reduction="batchmean")
        return [LossTerm("Distill Loss", kl, self.temperature ** 2)]
