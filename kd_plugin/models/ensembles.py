"""Ensemble teachers of the original: AvNet (fixed logit average) and JointNet (members + trained head)."""
from collections import namedtuple

import torch
import torch.nn as nn

from .registry import register_model
from .resnet_cifar import resnet18_cifar
from .vgg_cifar import vgg16_bn_cifar

DEFAULT_RESNET_WEIGHT = 0.72
DEFAULT_VGG_WEIGHT = 0.28

JointOutputs = namedtuple("JointOutputs", ["vgg", "resnet", "mix", "head"])


class AvNet(nn.Module):
    """``w_r * resnet(x) + w_v * vgg(x)`` on logits; the weights are a buffer (saved, never trained)."""

    def __init__(self, resnet=None, vgg=None, resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT):
        super().__init__()
        self.resnet = resnet if resnet is not None else resnet18_cifar()
        self.vgg = vgg if vgg is not None else vgg16_bn_cifar()
        self.register_buffer("member_weights", torch.tensor([float(resnet_weight), float(vgg_weight)]))

    def forward(self, x):
        return self.member_weights[0] * self.resnet(x) + self.member_weights[1] * self.vgg(x)


class JointNet(nn.Module):
    """ResNet18 + VGG16 + a 330-parameter head: three Linear(10,10) maps on a1, a2 and softmax(a3), summed.

    a1 = vgg(x), a2 = resnet(x), a3 = w_v*a1 + w_r*a2, head = h1(a1) + h2(a2) + h3(softmax(a3)).
    """

    def __init__(self, resnet=None, vgg=None, resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT,
                 num_classes=10):
        super().__init__()
        self.resnet = resnet if resnet is not None else resnet18_cifar(num_classes)
        self.vgg = vgg if vgg is not None else vgg16_bn_cifar(num_classes)
        self.register_buffer("member_weights", torch.tensor([float(resnet_weight), float(vgg_weight)]))
        self.head_vgg = nn.Linear(num_classes, num_classes)
        self.head_resnet = nn.Linear(num_classes, num_classes)
        self.head_mix = nn.Linear(num_classes, num_classes)
        self._frozen_batchnorms = []

    def forward_all(self, x):
        a1 = self.vgg(x)
        a2 = self.resnet(x)
        a3 = self.member_weights[1] * a1 + self.member_weights[0] * a2
        head = self.head_vgg(a1) + self.head_resnet(a2) + self.head_mix(torch.softmax(a3, dim=1))
        return JointOutputs(a1, a2, a3, head)

    def forward(self, x):
        return self.forward_all(x).head

    def unfrozen_modules(self):
        """The layers the original trains: VGG16's last three conv+BN and classifier, ResNet's last block and fc."""
        vgg_layers = list(self.vgg.features)
        conv_positions = [i for i, m in enumerate(vgg_layers) if isinstance(m, nn.Conv2d)][-3:]
        modules = {}
        for pos in conv_positions:
            modules[f"vgg.features.{pos}"] = vgg_layers[pos]
            modules[f"vgg.features.{pos + 1}"] = vgg_layers[pos + 1]
        modules["vgg.classifier"] = self.vgg.classifier
        last_stage = self.resnet.layer4
        modules[f"resnet.layer4.{len(last_stage) - 1}"] = last_stage[-1]
        modules["resnet.linear"] = self.resnet.linear
        for name in ("head_vgg", "head_resnet", "head_mix"):
            modules[name] = getattr(self, name)
        return modules

    def freeze_for_joint_training(self):
        """Freeze everything but ``unfrozen_modules``; frozen BatchNorms stay in eval mode so stats never drift."""
        trainable = set()
        for prefix, module in self.unfrozen_modules().items():
            trainable.update(f"{prefix}.{n}" for n, _ in module.named_parameters())
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)
        trainable_modules = {id(m) for top in self.unfrozen_modules().values() for m in top.modules()}
        self._frozen_batchnorms = [m for m in self.modules()
                                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in trainable_modules]
        self.train(self.training)
        return sorted(trainable)

    def train(self, mode=True):
        super().train(mode)
        for bn in self._frozen_batchnorms:
            bn.eval()
        return self


@register_model(aliases=("avg", "avnet"))
def avnet_cifar(resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT):
    return AvNet(resnet_weight=resnet_weight, vgg_weight=vgg_weight)


@register_model(aliases=("jn", "jointnet"))
def jointnet_cifar(resnet_weight=DEFAULT_RESNET_WEIGHT, vgg_weight=DEFAULT_VGG_WEIGHT):
    return JointNet(resnet_weight=resnet_weight, vgg_weight=vgg_weight)
