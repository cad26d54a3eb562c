"""Fixtures shared by the ensemble and main_KD_CIFAR10 tests: micro data and random-init member checkpoints.

A test module imports ``micro_fixture, member_files_fixture``; its tests ask for ``micro`` and ``member_files``
(the fixtures' names), so a test's parameter does not shadow the imported function (ruff F811)."""
import pytest
import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import save_checkpoint
from kd_plugin.data import write_synthetic_cifar


@pytest.fixture(scope="session", name="micro")
def micro_fixture(tmp_path_factory):
    return write_synthetic_cifar(str(tmp_path_factory.mktemp("micro")), train_images=40, test_images=20, seed=3)


@pytest.fixture(scope="session", name="member_files")
def member_files_fixture(tmp_path_factory):
    """The ResNet18 as a plain state_dict (the original's .pt), the VGG16 as a kd-plugin checkpoint."""
    folder = tmp_path_factory.mktemp("members")
    torch.manual_seed(0)
    resnet_path = str(folder / "resnet18.pt")
    torch.save(create_model("resnet18_cifar").state_dict(), resnet_path)
    vgg_path = save_checkpoint(0, "vgg16_bn_cifar", create_model("vgg16_bn_cifar"), name="vgg16", dir=str(folder))
    return {"resnet18_cifar": resnet_path, "vgg16_bn_cifar": vgg_path}
