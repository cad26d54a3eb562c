"""Decoupled KD (Zhao et al., CVPR 2022), as megvii-research/mdistiller ``mdistiller/distillers/DKD.py``.

With p = softmax(z/T): TCKD = KL(b_t || b_s) over the binary (target, non-target) masses b = [p_y, 1 - p_y];
NCKD = KL(p̂_t || p̂_s) over the non-target classes (target logit minus 1000 before the softmax); both summed
over classes and averaged over the batch. Contribution: warm * (alpha * TCKD + beta * NCKD) * T^2 with
warm = min(epoch / warmup, 1) for mdistiller's 1-based epoch, i.e. (epoch + 1) / warmup here (0-based);
warmup 0 turns the ramp off. Defaults are mdistiller's CIFAR-100 ones (alpha 1, beta 8, T 4, warm-up 20
epochs, CE weight 1, DKD weight 1).
"""
import torch
import torch.nn.functional as F

from .base import NON_NEGATIVE_INT, WEIGHT, DistillationLoss, DistillationLossWeights, LossTerm
from .registry import register_loss

TARGET_MASK_OFFSET = 1000.0  # mdistiller's: removes the target class from the non-target softmax


def binary_masses(probs, target_mask):
    """[p_target, p_non_target] per row."""
    target = (probs * target_mask).sum(dim=1, keepdim=True)
    other = (probs * ~target_mask).sum(dim=1, keepdim=True)
    return torch.cat([target, other], dim=1)


@register_loss
class DKDLoss(DistillationLoss):
    name = "dkd"
    arguments = {"alpha": (1.0, WEIGHT), "beta": (8.0, WEIGHT), "warmup": (20, NON_NEGATIVE_INT)}
    default_temperature = 4.0
    default_weights = DistillationLossWeights(distill=1.0, student=1.0)
    needs_labels = True

    def warmup_factor(self, epoch):
        return 1.0 if self.warmup == 0 else min((epoch + 1) / self.warmup, 1.0)

    def terms(self, student, teacher, labels, epoch):
        batch = student.shape[0]
        target_mask = torch.zeros_like(student, dtype=torch.bool).scatter_(1, labels.reshape(-1, 1), True)
        s, t = student / self.temperature, teacher / self.temperature
        b_student = binary_masses(F.softmax(s, dim=1), target_mask)
        b_teacher = binary_masses(F.softmax(t, dim=1), target_mask)
        tckd = F.kl_div(torch.log(b_student), b_teacher, reduction="sum") / batch
        offset = TARGET_MASK_OFFSET * target_mask
        nckd = F.kl_div(F.log_softmax(s - offset, dim=1), F.softmax(t - offset, dim=1), reduction="sum") / batch
        scale = self.warmup_factor(epoch) * self.temperature ** 2
        return [LossTerm("TCKD Loss", tckd, self.alpha * scale), LossTerm("NCKD Loss", nckd, self.beta * scale)]
