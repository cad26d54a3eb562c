import pytest
import torch

from kd_plugin import create_model
from kd_plugin.models import dataset_of, list_models, resolve_arch
from kd_plugin.models.vgg_cifar import CONFIGS
from kd_plugin.util.errors import KDPluginError

EXPECTED_PARAMS = {
    "resnet18_cifar": 11_173_962,
    "vgg16_bn_cifar": 14_728_266,
    "vgg7_bn_cifar": 1_595_082,
    "cnn5_cifar": 357_514,
    "avnet_cifar": 25_902_228,
    "jointnet_cifar": 25_902_558,
}
ALL_ARCHS = [f"resnet{d}_cifar" for d in (18, 34, 50, 101, 152)] + [f"{k}_bn_cifar" for k in CONFIGS] + \
    ["cnn5_cifar", "avnet_cifar", "jointnet_cifar", "ensemble_cifar"]


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,params", EXPECTED_PARAMS.items())
def test_parameter_counts_match_design(arch, params):
    assert count(create_model(arch)) == params


def test_zoo_holds_every_design_network():
    assert sorted(ALL_ARCHS) == list_models()
    assert len(CONFIGS) == 11


@pytest.mark.parametrize("arch", [a for a in ALL_ARCHS if not a.startswith(("resnet101", "resnet152"))])
def test_forward_shape(arch):
    model = create_model(arch).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("alias,name", [("Resnet18", "resnet18_cifar"), ("RESNET152", "resnet152_cifar"),
                                        ("VGG6AS", "vgg6as_bn_cifar"), ("vgg16a", "vgg16a_bn_cifar"),
                                        ("5-CNN", "cnn5_cifar"), ("avg", "avnet_cifar"), ("JN", "jointnet_cifar"),
                                        ("vgg7_bn_cifar", "vgg7_bn_cifar")])
def test_original_names_are_aliases(alias, name):
    assert resolve_arch(alias) == name
    assert create_model(alias).arch == name


def test_unknown_name_lists_closest():
    with pytest.raises(KDPluginError, match=r"unknown model 'vgg17'.*closest: .*vgg7"):
        create_model("vgg17")


def test_dataset_inferred_from_name_and_checked():
    assert dataset_of("vgg7") == "cifar10"
    with pytest.raises(KDPluginError, match="cifar10 network"):
        create_model("vgg7", dataset="imagenet")


def reference_vgg16_bn_layout():
    """Distiller's vgg16_bn_cifar layout written out independently: features Sequential + classifier Linear."""
    layers, channels = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(channels, v, 3, padding=1), torch.nn.BatchNorm2d(v), torch.nn.ReLU(True)]
            channels = v
    net = torch.nn.Module()
    net.features = torch.nn.Sequential(*layers)
    net.classifier = torch.nn.Linear(512, 10)
    return net


def test_vgg16_state_dict_interchanges_with_distiller_layout():
    ours = create_model("vgg16_bn_cifar")
    reference = reference_vgg16_bn_layout()
    reference_state = reference.state_dict()
    assert list(ours.state_dict().keys()) == list(reference_state.keys())
    ours.load_state_dict(reference_state, strict=True)
    reference.load_state_dict(ours.state_dict(), strict=True)


def test_avnet_is_weighted_sum_of_members():
    net = create_model("avg").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = 0.72 * net.resnet(x) + 0.28 * net.vgg(x)
        assert torch.allclose(net(x), expected, atol=1e-5)
