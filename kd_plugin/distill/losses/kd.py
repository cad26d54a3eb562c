"""Hinton's KD, exactly as Distiller's KnowledgeDistillationPolicy computes it:
T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), batch mean; the logged "Distill Loss" is the unscaled KL."""
import torch.nn.functional as F

from .base import DistillationLoss, DistillationLossWeights, LossTerm
from .registry import register_loss


def softened_kl(student, teacher, temperature):
    """KL(softmax(teacher/T) || softmax(student/T)), batch mean: Hinton's term without its T^2."""
    return F.kl_div(F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                    reduction="batchmean")


@register_loss
class KDLoss(DistillationLoss):
    name = "kd"
    default_temperature = 1.0  # Distiller's KnowledgeDistillationPolicy default
    default_weights = DistillationLossWeights()  # Distiller's (0.5, 0.5, 0)
    # Logit standardization's KD recipe (sunshangquan/logit-standardization-KD: mdistiller's KD config, CE weight
    # 0.1, with --kd-weight 9 --base-temp 2): z-scored logits give a much smaller KL, so the weight makes up for it.
    standardized_weights = DistillationLossWeights(distill=9.0, student=0.1)

    def terms(self, student, teacher, labels, epoch):
        return [LossTerm("Distill Loss", softened_kl(student, teacher, self.temperature), self.temperature ** 2)]
