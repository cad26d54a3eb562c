"""VGG with BatchNorm for CIFAR, laid out like Distiller's ``vgg*_bn_cifar`` (``features`` + ``classifier``).

``M`` is a 2x2 max-pool; ``A`` is the original's 1x1 conv (channels kept) + BatchNorm + ReLU + 2x2 avg-pool.
"""
import torch.nn as nn

from .registry import register_model

CONFIGS = {
    "vgg6as": ["A", 8, "M", 32, "A", 128, "M", 512, "A"],
    "vgg6am": [32, "A", 64, "M", 128, "M", 512, "A", "M"],
    "vgg6a": [64, "A", 128, "A", 256, "A", 512, "A", "M"],
    "vgg6": [64, "M", 128, "M", 256, "M", 512, "M", "A"],
    "vgg7": [64, "M", 64, "M", 128, "M", 256, "M", 512, "M"],
    "vgg8": [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg16a": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, 512, 512, 512, "A", "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"] + [512] * 4 + ["M"] + [512] * 4 + ["M"],
}


class VGGCifar(nn.Module):
    def __init__(self, features, num_classes=10):
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(512, num_classes)
        # each pooling layer ends a stage (feature distillation hooks these outputs)
        self.feature_stages = tuple(f"features.{i}" for i, m in enumerate(features)
                                    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def make_layers(config):
    layers, channels = [], 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif item == "A":
            layers += [nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            layers.append(nn.AvgPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


def _register(short):
    def factory(num_classes=10):
        return VGGCifar(make_layers(CONFIGS[short]), num_classes)

    factory.__name__ = f"{short}_bn_cifar"
    factory.__doc__ = f"{short.upper()} with BatchNorm for CIFAR: {CONFIGS[short]}"
    return register_model(factory, aliases=(short,))


for _short in CONFIGS:
    globals()[f"{_short}_bn_cifar"] = _register(_short)
