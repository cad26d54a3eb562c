"""Issue 26: the CIFAR-100 benchmark's networks, as RepDistiller (HobbitLong/RepDistiller ``models/``) defines them.

The reference numbers below were obtained once by importing RepDistiller's own model files (commit on the
mirror of HobbitLong/RepDistiller, ``models/__init__.py::model_dict[name](num_classes=100)``) from a temporary
copy outside this repository and counting ``sum(p.numel() for p in m.parameters())``; the digest is
sha256 over the lines ``f"{key} {tuple(shape)}"`` of its ``state_dict()`` in order, first 16 hex digits. Same
digest = same parameter and buffer names and shapes, so RepDistiller's checkpoints load into these networks
(checked at the time: with RepDistiller's weights loaded, logits agree to 2.3e-5 and the hooked stage outputs
equal its ``is_feat`` features exactly).
"""
import hashlib

import pytest
import torch

from kd_plugin.models import create_model, dataset_of, default_cfg, resolve_arch

REPDISTILLER = {  # name: (parameters, state_dict entries, digest of names and shapes)
    "resnet8x4": (1_233_540, 62, "a04332a459ae1465"),
    "resnet32x4": (7_433_860, 206, "24fbb1ea1d0f23f9"),
    "wrn_16_2": (703_284, 83, "5994bb013d98efa7"),
    "wrn_40_2": (2_255_156, 227, "9a74d15007bab65e"),
    "vgg8": (3_965_028, 37, "fdc773ff39915584"),
    "vgg13": (9_462_180, 72, "bf74037647da8d81"),
}
FEATURES = {"resnet8x4": ["layer1", "layer2", "layer3"], "wrn_16_2": ["block1", "block2", "block3"],
            "vgg8": ["relu0", "relu1", "relu2", "relu3", "relu4"]}


def layout_digest(model):
    text = "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", REPDISTILLER)
def test_parameter_counts_and_layout_match_repdistiller(name):
    params, entries, digest = REPDISTILLER[name]
    model = create_model(f"{name}_cifar100")
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == entries and layout_digest(model) == digest


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_2", "vgg8"])
def test_forward_gives_100_logits_and_named_stage_outputs(name):
    model = create_model(f"{name}_cifar100").eval()
    seen = {}
    for module in FEATURES[name]:
        dict(model.named_modules())[module].register_forward_hook(lambda m, i, o, n=module: seen.__setitem__(n, o))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    sizes = [seen[m].shape[-1] for m in FEATURES[name]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 32  # stages shrink from the full 32x32


def test_names_imply_cifar100_and_repdistiller_names_are_aliases():
    assert resolve_arch("resnet8x4") == "resnet8x4_cifar100" and resolve_arch("WRN_40_2") == "wrn_40_2_cifar100"
    assert resolve_arch("vgg8") == "vgg8_bn_cifar"  # the original experiment's VGG8 keeps its name
    assert dataset_of("vgg13_cifar100") == "cifar100" and dataset_of("vgg13") == "cifar10"
    assert default_cfg("resnet32x4")["normalization"].name == "cifar100"
    assert create_model("resnet8x4", classes=[str(i) for i in range(10)]).fc.out_features == 10
