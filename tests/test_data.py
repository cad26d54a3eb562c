import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_plugin.data import CLASS_NAMES, Normalizer, TensorLoader, load_split, validation_split
from kd_plugin.data.cifar10 import read_batch
from kd_plugin.util.errors import KDPluginError


def test_reads_generated_dataset(tiny_data):
    train, test = load_split(tiny_data, "train"), load_split(tiny_data, "test")
    assert train.images.shape == (200, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.labels.shape == (60,) and test.labels.dtype == torch.int64
    assert train.classes == CLASS_NAMES
    assert sorted(set(train.labels.tolist())) == list(range(10))


def test_accepts_the_batches_folder_itself(tiny_data):
    inner = os.path.join(tiny_data, "cifar-10-batches-py")
    assert torch.equal(load_split(inner, "test").images, load_split(tiny_data, "test").images)


def test_real_subset_loads_without_official_checksums():
    subset = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-subset")
    if not os.path.isdir(subset):
        pytest.skip("../shared/data/cifar10-subset is not present")
    train, test = load_split(subset, "train"), load_split(subset, "test")
    assert (len(train), len(test)) == (4068, 1017)
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def write_batch(path, data, labels):
    with open(path, "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels}, fh, protocol=2)


@pytest.mark.parametrize("data,labels,message", [
    (np.zeros((4, 3072), np.float32), [0, 1, 2, 3], "uint8"),
    (np.zeros((4, 100), np.uint8), [0, 1, 2, 3], "shape"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2], "3 labels for 4 images"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2, 10], "out of range"),
    (np.zeros((4, 3072), np.uint8), [0, -1, 2, 3], "out of range"),
])
def test_validation_names_file_and_problem(tmp_path, data, labels, message):
    path = str(tmp_path / "data_batch_1")
    write_batch(path, data, labels)
    with pytest.raises(KDPluginError, match=message) as err:
        read_batch(path)
    assert path in str(err.value)


def test_truncated_and_missing_files(tmp_path, tiny_data):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    source = os.path.join(tiny_data, "cifar-10-batches-py")
    for name in os.listdir(source):
        (folder / name).write_bytes(Path(source, name).read_bytes())
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(KDPluginError, match="truncated or corrupt"):
        load_split(str(tmp_path), "test")
    os.remove(folder / "data_batch_3")
    with pytest.raises(KDPluginError, match="data_batch_3: batch file missing"):
        load_split(str(tmp_path), "train")
    with pytest.raises(KDPluginError, match="does not exist"):
        load_split(str(tmp_path / "nope"), "train")


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(KDPluginError, match="refusing to load"):
        read_batch(str(path))
    assert not marker.exists()


def test_validation_split_is_seeded_and_disjoint(tiny_data):
    train = load_split(tiny_data, "train")
    a_train, a_valid = validation_split(train, 0.1, seed=3)
    b_train, b_valid = validation_split(train, 0.1, seed=3)
    assert len(a_valid) == 20 and len(a_train) == 180
    assert torch.equal(a_valid.images, b_valid.images)
    assert validation_split(train, 0.0)[1] is None
    with pytest.raises(KDPluginError, match=r"\[0, 1\)"):
        validation_split(train, 1.0)


def test_normalization_matches_torchvision(tiny_data):
    from torchvision.transforms import functional as TF

    test = load_split(tiny_data, "test")
    ours = Normalizer()(test.images[:4])
    reference = TF.normalize(test.images[:4].float() / 255, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert torch.allclose(ours, reference, atol=1e-5)


def test_loader_order_and_views_are_a_function_of_seed_and_epoch(tiny_data):
    train = load_split(tiny_data, "train")
    a = TensorLoader(train, 32, "y", shuffle=True, seed=5)
    b = TensorLoader(train, 32, "y", shuffle=True, seed=5)
    order_a, views_a = a.plan(3)
    order_b, views_b = b.plan(3)
    assert torch.equal(order_a, order_b) and torch.equal(views_a, views_b)
    assert not torch.equal(a.plan(4)[0], order_a)
    assert sorted(order_a.tolist()) == list(range(200))
    batches = list(a.epoch(3))
    assert len(batches) == len(a) == 7 and batches[-1].inputs.shape == (8, 3, 32, 32)
    resumed = list(a.epoch(3, start_batch=5))
    assert torch.equal(resumed[0].inputs, batches[5].inputs)
