"""The CIFAR-100 benchmark's networks (RepDistiller, Tian et al. ICLR 2020; reused by mdistiller): ResNet8x4 /
ResNet32x4, WRN-16-2 / WRN-40-2 and VGG8 / VGG13 with BatchNorm, laid out as RepDistiller's ``models/`` lays
them out, so their parameter counts and state_dict names (and so RepDistiller's checkpoints) match.

Named ``<net>_cifar100`` so that the dataset is inferred from the name and no Distiller network is shadowed;
RepDistiller's names are aliases where kd-plugin does not already use them (``vgg8``/``vgg13`` already name
the CIFAR-10 VGGs of the original experiment). Feature-distillation hook points (module names): ResNet
``layer1..3`` (each stage's output, after its ReLU), WRN ``block1..3``, VGG ``relu0..4`` (each block's output
after its ReLU, what RepDistiller's ``is_feat`` returns).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model

CIFAR100 = "cifar100"


class ResBlock(nn.Module):
    """The CIFAR ResNet's basic block: two 3x3 convolutions, a projection shortcut when the shape changes."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetCifar100(nn.Module):
    """Depth 6n+2 with basic blocks; FILTERS: stem, then the three stages' widths."""

    feature_stages = ("layer1", "layer2", "layer3")

    def __init__(self, depth, filters, num_classes=100):
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        planes = filters[0]
        for index, (width, stride) in enumerate(zip(filters[1:], (1, 2, 2), strict=True), 1):
            layers = [ResBlock(planes if i == 0 else width, width, stride if i == 0 else 1) for i in range(blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))
            planes = width
        self.fc = nn.Linear(filters[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class WideBlock(nn.Module):
    """WRN's pre-activation block: BN-ReLU-conv twice; the shortcut convolves the activated input when the
    width changes."""

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal = in_planes == out_planes
        self.convShortcut = None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x):
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.equal else self.convShortcut(activated))


class WideStage(nn.Module):
    def __init__(self, blocks, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(in_planes if i == 0 else out_planes, out_planes,
                                               stride if i == 0 else 1) for i in range(blocks)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """Depth 6n+4, widths 16, 16k, 32k, 64k."""

    feature_stages = ("block1", "block2", "block3")

    def __init__(self, depth, widen, num_classes=100):
        super().__init__()
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = WideStage(blocks, widths[0], widths[1], 1)
        self.block2 = WideStage(blocks, widths[1], widths[2], 2)
        self.block3 = WideStage(blocks, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn1(x)), 1).flatten(1))


def _vgg_block(widths, in_channels):
    """3x3 conv + BN + ReLU per width, the block's last ReLU left to the network (applied as ``reluN``)."""
    layers = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGGCifar100(nn.Module):
    """Five blocks, 2x2 max-pools after the first three (a 32x32 input skips the fourth, as RepDistiller's
    does), global average pooling, one linear classifier."""

    feature_stages = ("relu1", "relu2", "relu3", "relu4")  # RepDistiller's AT compares feat[1:-1]: f1..f4

    def __init__(self, blocks, num_classes=100):
        super().__init__()
        in_channels = 3
        for index, widths in enumerate(blocks):
            setattr(self, f"block{index}", _vgg_block(widths, in_channels))
            setattr(self, f"relu{index}", nn.ReLU())
            in_channels = widths[-1]
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        large = x.shape[2] == 64
        for index in range(5):
            x = getattr(self, f"relu{index}")(getattr(self, f"block{index}")(x))
            if index < 3 or (index == 3 and large):
                x = self.pool(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


VGG_BLOCKS = {"vgg8": [[64], [128], [256], [512], [512]],
              "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]}


@register_model(aliases=("resnet8x4",), normalization=CIFAR100)
def resnet8x4_cifar100(num_classes=100):
    return ResNetCifar100(8, [32, 64, 128, 256], num_classes)


@register_model(aliases=("resnet32x4",), normalization=CIFAR100)
def resnet32x4_cifar100(num_classes=100):
    return ResNetCifar100(32, [32, 64, 128, 256], num_classes)


@register_model(aliases=("wrn_16_2", "wrn-16-2"), normalization=CIFAR100)
def wrn_16_2_cifar100(num_classes=100):
    return WideResNet(16, 2, num_classes)


@register_model(aliases=("wrn_40_2", "wrn-40-2"), normalization=CIFAR100)
def wrn_40_2_cifar100(num_classes=100):
    return WideResNet(40, 2, num_classes)


@register_model(normalization=CIFAR100)
def vgg8_cifar100(num_classes=100):
    return VGGCifar100(VGG_BLOCKS["vgg8"], num_classes)


@register_model(normalization=CIFAR100)
def vgg13_cifar100(num_classes=100):
    return VGGCifar100(VGG_BLOCKS["vgg13"], num_classes)
