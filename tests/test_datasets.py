"""Issue 26: the dataset registry (CIFAR-10, CIFAR-100, image folders), inference of the dataset, and a run's
classes flowing into the model, its checkpoint, its per-class tables and its exported metadata."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.data import default_classes, get_dataset, list_datasets, load_split, resolve_dataset, write_synthetic
from kd_plugin.export.identity import model_identity
from kd_plugin.models import create_model
from kd_plugin.reporting.tables import per_class_lines
from kd_plugin.util.errors import KDPluginError


def write_cifar100_by_hand(root, names=None):
    """A CIFAR-100 folder written here, not by kd-plugin: known pixels, fine and coarse labels, meta names."""
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder)
    rng = np.random.default_rng(7)
    splits = {}
    for split, count in (("train", 12), ("test", 6)):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, size=count)]
        coarse = [int(x) for x in rng.integers(0, 20, size=count)]
        with open(os.path.join(folder, split), "wb") as fh:
            pickle.dump({b"data": data, b"fine_labels": fine, b"coarse_labels": coarse}, fh, protocol=2)
        splits[split] = (data, fine, coarse)
    if names is not None:
        with open(os.path.join(folder, "meta"), "wb") as fh:
            pickle.dump({"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]}, fh)
    return splits


def test_registry_lists_the_datasets_with_their_facts():
    assert {"cifar10", "cifar100"} <= set(list_datasets())
    assert get_dataset("cifar100").num_classes == 100 and get_dataset("cifar10").num_classes == 10
    assert get_dataset("cifar100").default_normalization.mean == (0.5071, 0.4865, 0.4409)
    assert len(set(default_classes("cifar100"))) == 100
    with pytest.raises(KDPluginError, match="unknown dataset 'mnist'"):
        get_dataset("mnist")


def test_cifar100_reader_returns_the_files_pixels_and_labels(tmp_path):
    names = [f"class{i:02d}" for i in range(100)]
    splits = write_cifar100_by_hand(str(tmp_path), names)
    for split, (data, fine, coarse) in splits.items():
        read = load_split(str(tmp_path), split)
        assert torch.equal(read.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        assert read.labels.tolist() == fine and read.coarse_labels.tolist() == coarse
        assert read.classes == tuple(names) and read.coarse_classes[3] == "super3"
    # a subset keeps the coarse labels aligned with the fine ones
    part = load_split(str(tmp_path), "train").subset(torch.tensor([4, 1]))
    assert part.coarse_labels.tolist() == [splits["train"][2][4], splits["train"][2][1]]


def test_cifar100_labels_out_of_range_name_the_file(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split in ("train", "test"):
        with open(folder / split, "wb") as fh:
            pickle.dump({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100], "coarse_labels": [0, 0]}, fh)
    with pytest.raises(KDPluginError, match=r"test: labels out of range 0\.\.99"):
        load_split(str(tmp_path), "test")


def test_generated_cifar100_is_learnable_format(tmp_path):
    root = write_synthetic(str(tmp_path), 300, 200, seed=1, dataset="cifar100")
    train = load_split(root, "train")
    assert len(train) == 300 and sorted(set(train.labels.tolist())) == list(range(100))
    assert train.classes == default_classes("cifar100")
    assert torch.equal(train.coarse_labels, train.labels // 5)


def test_dataset_is_inferred_from_the_folder_and_the_network(tmp_path):
    c10 = write_synthetic(str(tmp_path / "c10"), 20, 10)
    c100 = write_synthetic(str(tmp_path / "c100"), 100, 100, dataset="cifar100")
    assert resolve_dataset(c10) == "cifar10" and resolve_dataset(c100) == "cifar100"
    assert resolve_dataset(c100, arch_dataset="cifar10") == "cifar100"  # a _cifar network trains on any 32x32 data
    assert resolve_dataset(str(tmp_path / "absent"), arch_dataset="cifar100") == "cifar100"  # e.g. --download
    assert resolve_dataset(str(tmp_path / "absent")) == "cifar10"
    with pytest.raises(KDPluginError, match="holds cifar10 data but the network is a cifar100 one"):
        resolve_dataset(c10, arch_dataset="cifar100")
    assert resolve_dataset(c10, "cifar10", arch_dataset="cifar100") == "cifar10"  # said explicitly: allowed
    with pytest.raises(KDPluginError, match="holds cifar10 data, not cifar100"):
        resolve_dataset(c10, "cifar100")
    both = write_synthetic(str(tmp_path / "c10"), 20, 10, dataset="cifar100")
    with pytest.raises(KDPluginError, match="holds cifar10 and cifar100 data; say which with --dataset"):
        resolve_dataset(both)


def test_models_take_their_classes_and_checkpoints_record_them(tmp_path):
    classes = default_classes("cifar100")
    model = create_model("cnn5", classes=classes)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100) and model.classes == classes
    path = save_checkpoint(0, "cnn5_cifar", model, name="m", dir=str(tmp_path))
    assert load_checkpoint_file(path).classes == classes
    loaded, _ = load_model(path)  # the record alone builds the right head
    assert loaded.classes == classes and loaded.fc2.out_features == 100
    with pytest.raises(KDPluginError, match="other classes than the data's .*it records 100 classes, the data has 10"):
        load_model(path, classes=default_classes("cifar10"))
    renamed = list(classes)
    renamed[7] = "ladybird"
    with pytest.raises(KDPluginError, match="class 7 is 'beetle' there and 'ladybird' in the data"):
        load_model(path, classes=renamed)


def test_per_class_tables_are_wide_for_few_classes_and_tall_for_many():
    few = per_class_lines({"a": {"cat": 50.0, "dog": 25.0}})
    assert few == ["| cat | dog |", "|---|---|", "| 50.0 | 25.0 |"]
    many = {f"c{i}": float(i) for i in range(100)}
    tall = per_class_lines({"a": many, "b": {**many, "c3": 9.5}})
    assert tall[0] == "| class | a | b |" and len(tall) == 102 and tall[5] == "| c3 | 3.0 | 9.5 |"


def test_export_metadata_carries_the_models_classes_and_normalization():
    identity = model_identity(create_model("cnn5", classes=default_classes("cifar100"),
                                           normalization=get_dataset("cifar100").default_normalization), "cnn5_cifar")
    assert identity["classes"] == list(default_classes("cifar100"))
    assert identity["mean"] == [0.5071, 0.4865, 0.4409]
    assert model_identity(create_model("cnn5"), "cnn5_cifar")["classes"] == list(default_classes("cifar10"))


def test_a_run_on_cifar100_reports_100_classes(tmp_path):
    from kd_plugin.cli.compress_classifier import main

    data = write_synthetic(str(tmp_path / "d"), 200, 100, dataset="cifar100")
    assert main([data, "-a", "cnn5", "--epochs", "1", "-b", "50", "--no-progress", "-o", str(tmp_path / "o"),
                 "-n", "r", "--seed", "1"]) in (0, None)
    run_dir = next(p for p in (tmp_path / "o").iterdir() if p.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == "cifar100" and list(summary["test_per_class"]) == list(default_classes("cifar100"))
    checkpoint = load_checkpoint_file(str(run_dir / "r_checkpoint.pth.tar"))
    assert checkpoint.classes == default_classes("cifar100") and checkpoint.content["dataset"] == "cifar100"
    assert checkpoint.normalization()[0].name == "cifar100"


def write_image_folder_by_hand(root, colours, per_class=5, size=32):
    """ROOT/<name>/i.png of solid COLOURS ({name: (r, g, b)}), written with Pillow directly."""
    from PIL import Image

    for name, colour in colours.items():
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            Image.new("RGB", (size, size), colour).save(os.path.join(root, name, f"{i}.png"))
    return root


def test_image_folder_reads_pixels_names_and_splits_every_fifth_image(tmp_path):
    root = write_image_folder_by_hand(str(tmp_path), {"red": (255, 0, 0), "blue": (0, 0, 200)}, size=48)
    assert resolve_dataset(root) == "imagefolder"
    train, test = load_split(root, "train"), load_split(root, "test")
    assert train.classes == ("blue", "red") and (len(train), len(test)) == (8, 2)  # 4.png of each class is a test one
    assert train.images.shape == (8, 3, 32, 32)  # resized from 48x48 to the networks' input
    assert torch.equal(test.images[test.labels == 1][0], torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None]
                       .expand(3, 32, 32))
    assert get_dataset("imagefolder").default_normalization.name == "imagenet"


def test_image_folder_with_train_and_val_and_its_refusals(tmp_path):
    write_image_folder_by_hand(str(tmp_path / "train"), {"a": (1, 2, 3), "b": (4, 5, 6)})
    write_image_folder_by_hand(str(tmp_path / "val"), {"a": (1, 2, 3), "b": (4, 5, 6)}, per_class=2)
    assert len(load_split(str(tmp_path), "train")) == 10 and len(load_split(str(tmp_path), "test")) == 4
    (tmp_path / "val" / "c").mkdir()
    with pytest.raises(KDPluginError, match="val: class folder 'c' is not one of the training split's"):
        load_split(str(tmp_path), "test")
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(KDPluginError, match=r"train/c: class folder holds no images"):
        load_split(str(tmp_path), "train")
    (tmp_path / "train" / "c" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(KDPluginError, match=r"train/c/broken.png: not a readable image"):
        load_split(str(tmp_path), "train")


def test_an_image_folder_trains_evaluates_and_exports_with_its_class_names(tmp_path):
    pytest.importorskip("onnxruntime")
    from kd_plugin.cli.compress_classifier import main as train
    from kd_plugin.cli.kd_plugin import main as kd_plugin

    data = str(tmp_path / "folder")
    assert kd_plugin(["make-data", data, "--dataset", "imagefolder", "--train-images", "25",
                      "--test-images", "10"]) == 0
    assert train([data, "-a", "cnn5", "--epochs", "1", "-b", "25", "--vs", "0", "--no-progress", "-o",
                  str(tmp_path / "o"), "-n", "f", "--seed", "0"]) in (0, None)
    (checkpoint,) = [str(p) for p in (tmp_path / "o").glob("f___*/f_best.pth.tar")]
    names = ["amber", "basalt", "cobalt", "dune", "ember"]
    assert list(load_checkpoint_file(checkpoint).classes) == names
    assert kd_plugin(["evaluate", checkpoint, "--data", data, "-o", str(tmp_path / "r"), "--repeats", "1"]) == 0
    card = json.loads((tmp_path / "r" / "f_best.json").read_text())
    assert list(card["test_per_class"]) == names and card["normalization"]["name"] == "imagenet"
    assert kd_plugin(["export", checkpoint, "--format", "onnx", "--data", data, "-o", str(tmp_path / "e")]) == 0
    info = json.loads((tmp_path / "e" / "f_best.json").read_text())
    assert info["classes"] == names and info["mean"] == [0.485, 0.456, 0.406]
    check = info["files"][0]["check"]
    # the checks feed the network its own normalization, as the card did (torch and ONNX Runtime alike)
    assert check["top1"] == pytest.approx(card["test_top1"]) == pytest.approx(check["pytorch_top1"])
    assert check["max_abs_logit_delta"] < 1e-3
