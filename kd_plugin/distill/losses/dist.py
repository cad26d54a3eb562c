"""DIST (Huang et al., NeurIPS 2022), as hunto/image_classification_sota ``lib/models/losses/dist_kd.py``
(the classification code of hunto/DIST_KD).

With P = softmax(z/T): inter-class = 1 - mean over samples of Pearson(P_s[i], P_t[i]); intra-class = the same
over classes (columns, across the batch); Pearson as there, with 1e-8 added to the norms' product.
Contribution: T^2 * (beta * inter + gamma * intra). Defaults are DIST_KD's CIFAR-100 recipe
(``configs/strategies/distill/dist_cifar.yaml``: ``kd: dist_t4`` = beta 1, gamma 1, T 4; KD weight 2,
CE weight 1).
"""
from .base import WEIGHT, DistillationLoss, DistillationLossWeights, LossTerm
from .registry import register_loss

PEARSON_EPS = 1e-8


def pearson_rows(a, b, eps=PEARSON_EPS):
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@register_loss
class DISTLoss(DistillationLoss):
    name = "dist"
    arguments = {"beta": (1.0, WEIGHT), "gamma": (1.0, WEIGHT)}
    default_temperature = 4.0
    default_weights = DistillationLossWeights(distill=2.0, student=1.0)

    def terms(self, student, teacher, labels, epoch):
        p_student = (student / self.temperature).softmax(dim=1)
        p_teacher = (teacher / self.temperature).softmax(dim=1)
        inter = 1 - pearson_rows(p_student, p_teacher).mean()
        intra = 1 - pearson_rows(p_student.t(), p_teacher.t()).mean()
        scale = self.temperature ** 2
        return [LossTerm("Inter-class Loss", inter, self.beta * scale),
                LossTerm("Intra-class Loss", intra, self.gamma * scale)]
