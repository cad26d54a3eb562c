import pytest
import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.protocol.scheduler import CompressionScheduler
from kd_plugin.util.errors import KDPluginError


def test_round_trip_in_distiller_format(tmp_path):
    model = create_model("cnn5")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = CompressionScheduler(model)
    path = save_checkpoint(4, "cnn5_cifar", model, optimizer, scheduler, {"current_top1": 50.0, "best_top1": 51.0,
                                                                           "best_epoch": 3}, True, "exp", str(tmp_path))
    assert path.endswith("exp_checkpoint.pth.tar") and (tmp_path / "exp_best.pth.tar").exists()
    raw = torch.load(path, weights_only=True)
    assert {"epoch", "state_dict", "arch", "is_parallel", "dataset", "optimizer_state_dict", "optimizer_type",
            "compression_sched", "extras"} <= set(raw)
    assert raw["optimizer_type"] == "SGD" and raw["arch"] == "cnn5_cifar" and raw["dataset"] == "cifar10"
    assert set(raw["compression_sched"]["masks_dict"]) == {n for n, _ in model.named_parameters()}
    loaded, checkpoint = load_model(path)
    assert checkpoint.epoch == 4 and checkpoint.extras["best_top1"] == 51.0
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_distiller_file_with_pickled_optimizer_class_and_parallel_prefixes(tmp_path):
    model = create_model("vgg7")
    state = {f"module.{k}" if not k.startswith("features") else k.replace("features.", "features.module."): v
             for k, v in model.state_dict().items()}
    path = tmp_path / "distiller_checkpoint.pth.tar"
    torch.save({"epoch": 2, "arch": "vgg7_bn_cifar", "state_dict": state, "is_parallel": True,
                "optimizer_type": torch.optim.SGD, "extras": {"best_top1": 10.0}}, path)
    loaded, checkpoint = load_model(str(path), "vgg7_bn_cifar")
    assert checkpoint.kind == "distiller"
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)


def test_original_plain_state_dict(tmp_path):
    model = create_model("Resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), path)
    loaded, checkpoint = load_model(str(path), "Resnet18")
    assert checkpoint.kind == "state_dict" and checkpoint.arch is None
    assert torch.equal(loaded.linear.weight, model.linear.weight)
    with pytest.raises(KDPluginError, match="names no architecture"):
        load_model(str(path))


def test_arch_mismatch_names_both(tmp_path):
    path = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), dir=str(tmp_path))
    with pytest.raises(KDPluginError, match="cnn5_cifar, not the requested vgg7_bn_cifar"):
        load_model(path, "vgg7")


def test_plain_state_dict_of_another_arch_is_rejected(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(create_model("cnn5").state_dict(), path)
    with pytest.raises(KDPluginError, match="weights do not fit vgg7_bn_cifar"):
        load_model(str(path), "vgg7")


def test_corrupt_and_malicious_files(tmp_path):
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    with pytest.raises(KDPluginError, match="empty"):
        load_checkpoint_file(str(empty))
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(KDPluginError, match="not a loadable checkpoint"):
        load_checkpoint_file(str(junk))
    marker = tmp_path / "marker"

    class Exploit:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "x": Exploit()}, evil)
    with pytest.raises(KDPluginError, match="refused to unpickle"):
        load_checkpoint_file(str(evil))
    assert not marker.exists()
