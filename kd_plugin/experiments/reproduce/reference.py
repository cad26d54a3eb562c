"""The original's published numbers (docs/DESIGN.md §4: full CIFAR-10, 10,000 test images), as data."""

CLASS_ORDER = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# arch: epochs, train top-1, test top-1, memory (MiB), parameters, batched latency GPU / CPU (s/image)
MODELS = {
    "resnet18_cifar": dict(epochs=260, train_top1=99.976, test_top1=94.59, size_mib=42.6, parameters=11_173_962,
                           latency_gpu=0.00063, latency_cpu=0.031),
    "vgg16_bn_cifar": dict(epochs=275, train_top1=99.834, test_top1=93.10, size_mib=56.2, parameters=14_728_266,
                           latency_gpu=0.00052, latency_cpu=0.025),
    "avnet_cifar": dict(epochs=None, train_top1=100.0, test_top1=95.44, size_mib=98.9, parameters=25_902_228,
                        latency_gpu=0.00085, latency_cpu=0.0490),
    "jointnet_cifar": dict(epochs=250, train_top1=100.0, test_top1=95.99, size_mib=98.9, parameters=25_902_558,
                           latency_gpu=0.000885, latency_cpu=0.0492),
    "vgg7_bn_cifar": dict(epochs=350, train_top1=99.888, test_top1=90.64, size_mib=6.07, parameters=1_595_082,
                          latency_gpu=0.000342, latency_cpu=0.0042),
    "cnn5_cifar": dict(epochs=200, train_top1=None, test_top1=82.85, size_mib=1.37, parameters=357_514,
                       latency_gpu=0.000313, latency_cpu=0.0024, note="paper: 84.74"),
}

# (teacher, student, alpha, T): student test top-1
KD_ROWS = {
    ("resnet18_cifar", "vgg7_bn_cifar", 0.5, 1.0): 90.82,
    ("resnet18_cifar", "vgg7_bn_cifar", 0.5, 1.5): 90.94,
    ("resnet18_cifar", "vgg7_bn_cifar", 0.6, 1.5): 90.88,
    ("resnet18_cifar", "vgg7_bn_cifar", 0.4, 1.5): 90.84,
    ("resnet18_cifar", "vgg7_bn_cifar", 0.5, 2.0): 90.69,
    ("vgg16_bn_cifar", "vgg7_bn_cifar", 0.5, 1.0): 91.03,
    ("vgg16_bn_cifar", "vgg7_bn_cifar", 0.5, 1.5): 90.78,
    ("avnet_cifar", "vgg7_bn_cifar", 0.5, 1.0): 90.83,
    ("avnet_cifar", "vgg7_bn_cifar", 0.5, 1.35): 91.10,
    ("avnet_cifar", "cnn5_cifar", 0.5, 1.36): 85.17,
    ("jointnet_cifar", "cnn5_cifar", 0.5, 1.0): 85.28,
    ("jointnet_cifar", "cnn5_cifar", 0.5, 1.36): 85.60,
}

# arch: per-class test top-1 (%) in CLASS_ORDER
PER_CLASS = {
    "resnet18_cifar": (97, 97, 93, 85, 96, 92, 98, 96, 96, 96),
    "vgg16_bn_cifar": (93, 96, 91, 83, 92, 88, 95, 94, 96, 95),
    "avnet_cifar": (97, 97, 93, 88, 95, 93, 97, 96, 96, 96),
    "jointnet_cifar": (97, 98, 94, 91, 97, 93, 98, 97, 98, 98),
    "vgg7_bn_cifar": (92, 95, 87, 81, 92, 83, 93, 92, 94, 93),
    "cnn5_cifar": (86, 90, 74, 68, 85, 71, 88, 84, 91, 87),
}
