"""How experiments name models in tables, files and titles."""

DISPLAY_NAMES = {"resnet18_cifar": "ResNet18", "vgg16_bn_cifar": "VGG16", "avnet_cifar": "AvNet",
                 "jointnet_cifar": "JointNet", "vgg7_bn_cifar": "VGG7", "cnn5_cifar": "5-CNN",
                 "ensemble_cifar": "Ensemble"}


def display_name(arch):
    """The original experiment's name for ARCH (``ResNet18``), or ARCH itself."""
    return DISPLAY_NAMES.get(arch, arch)


def short(arch):
    """ARCH without its dataset suffix, for file and run names (``vgg7_bn``)."""
    return arch[:-len("_cifar")] if arch.endswith("_cifar") else arch
