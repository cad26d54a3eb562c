"""How much of the original's work a ``reproduce`` run does: data, epochs per network, batch, latency repeats."""
from dataclasses import dataclass

from .reference import MODELS

ORIGINAL_EPOCHS = {arch: spec["epochs"] for arch, spec in MODELS.items() if spec["epochs"]}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    epochs: dict  # trained arch -> epochs (KD rows use their student's)
    batch_size: int = None  # None: the schedules' own (the original's 128)
    lr: float = None  # None: the schedules' own
    synthetic: tuple = None  # (train, test) images generated when no --data is given
    latency_repeats: int = 50
    needs_data: bool = True


PROFILES = {
    "smoke": Profile(
        "smoke", "every stage for real on small generated data, batch 32, lr 0.01, learning-rate steps scaled with "
                 "the epochs; the teachers train 5 epochs (JointNet 3, students 3) so that they learn the generated "
                 "classes (one epoch at lr 0.01 left every BatchNorm network at chance; lr 0.05 diverges on this "
                 "little data): a quick look at every table, not a measurement of CIFAR-10",
        epochs={"resnet18_cifar": 5, "vgg16_bn_cifar": 5, "jointnet_cifar": 3, "vgg7_bn_cifar": 3, "cnn5_cifar": 3},
        batch_size=32, lr=0.01, synthetic=(200, 100), latency_repeats=5, needs_data=False),
    "subset": Profile(
        "subset", "a CIFAR-10-format subset (e.g. 4,068 train / 1,017 test images) with epochs cut to about half "
                  "an hour on an otherwise idle 2-core CPU (most of it the twelve KD rows); learning-rate steps "
                  "scaled with the epochs",
        epochs={"resnet18_cifar": 6, "vgg16_bn_cifar": 6, "jointnet_cifar": 2, "vgg7_bn_cifar": 5,
                "cnn5_cifar": 6}, latency_repeats=20),
    "full": Profile(
        "full", "real CIFAR-10 (50,000 / 10,000) with the original's epochs; meant for a GPU",
        epochs=dict(ORIGINAL_EPOCHS), latency_repeats=100),
}
