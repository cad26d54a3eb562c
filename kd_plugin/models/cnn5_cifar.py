"""The original's 5-layer CNN student (357,514 parameters)."""
import torch.nn as nn

from .registry import register_model


def _conv_block(in_ch, out_ch):
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.MaxPool2d(2), nn.ReLU(inplace=True)]


class CNN5(nn.Module):
    feature_stages = ("features.3", "features.7", "features.11")  # each block's output (16, 8, 4 pixels wide)

    def __init__(self, num_classes=10, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(*_conv_block(3, 32), *_conv_block(32, 64), *_conv_block(64, 128))
        self.fc1 = nn.Sequential(nn.Linear(2048, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc2(self.fc1(self.features(x).flatten(1)))


@register_model(aliases=("5-cnn", "cnn5"))
def cnn5_cifar(num_classes=10, dropout=0.5):
    return CNN5(num_classes, dropout)
