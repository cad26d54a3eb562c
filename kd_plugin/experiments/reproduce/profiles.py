"""How much of the original's work a ``reproduce`` run does: data, epochs per network, batch, latency repeats."""
from dataclasses import dataclass

from .cifar100 import PAIRS as CIFAR100_PAIRS
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
    pipeline: str = "original"  # which table: the original experiment's, or "cifar100" (reproduce/cifar100.py)
    dataset: str = "cifar10"  # what the generated data is when no --data is given
    crd_negatives: int = None  # CRD's nce_k instead of the schedules' 16,384 (a CPU smoke run)


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
    "cifar100": Profile(
        "cifar100", "real CIFAR-100 (50,000 / 10,000) with mdistiller's recipe: 240 epochs, lr 0.05 x0.1 at "
                    "150/180/210, batch 64, wd 5e-4; teachers and students alone, then KD, DKD, FitNet, AT and CRD "
                    "for ResNet32x4 -> ResNet8x4 and WRN-40-2 -> WRN-16-2; meant for a GPU",
        epochs={arch: 240 for pair in CIFAR100_PAIRS for arch in pair}, latency_repeats=20, pipeline="cifar100",
        dataset="cifar100"),
    "cifar100-smoke": Profile(
        "cifar100-smoke", "every stage of the cifar100 profile on small generated CIFAR-100-format data, one epoch "
                          "each at batch 32, CRD with 256 negatives: a quick look at the table, not a measurement",
        epochs={arch: 1 for pair in CIFAR100_PAIRS for arch in pair}, batch_size=32, synthetic=(200, 100),
        latency_repeats=2, needs_data=False, pipeline="cifar100", dataset="cifar100", crd_negatives=256),
    "full": Profile(
        "full", "real CIFAR-10 (50,000 / 10,000) with the original's epochs; meant for a GPU",
        epochs=dict(ORIGINAL_EPOCHS), latency_repeats=100),
}
