"""Files kd-plugin writes: make-data never overwrites a dataset unasked, and written files honour the umask."""
import hashlib
import os
import stat
from pathlib import Path

import pytest

from kd_plugin.data import write_synthetic_cifar
from kd_plugin.util.fileio import write_json

from cli_support import assert_one_line_error, exit_code


def digests(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("layout", ["batches folder", "batches in the folder itself"])
def test_make_data_refuses_a_folder_that_holds_a_dataset_and_leaves_it_intact(tmp_path, capsys, layout):
    root = str(tmp_path / "cifar")
    write_synthetic_cifar(root, train_images=20, test_images=10, seed=1)
    if layout == "batches in the folder itself":  # the content of cifar-10-batches-py, as some users keep it
        inner = os.path.join(root, "cifar-10-batches-py")
        for name in os.listdir(inner):
            os.rename(os.path.join(inner, name), os.path.join(root, name))
        os.rmdir(inner)
    before = digests(root)
    assert_one_line_error(["make-data", root, "--seed", "7"], "already holds a dataset", capsys)
    assert digests(root) == before


def test_make_data_overwrites_with_force_and_writes_a_fresh_folder(tmp_path, capsys):
    root = str(tmp_path / "cifar")
    assert exit_code(["make-data", root, "--train-images", "20", "--test-images", "10", "--seed", "1"]) == 0
    before = digests(root)
    assert exit_code(["make-data", root, "--train-images", "20", "--test-images", "10", "--seed", "2",
                      "--force"]) == 0
    after = digests(root)
    assert after.keys() == before.keys() and after != before


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_permissions_of_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_json(str(tmp_path / "record.json"), {"a": 1})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives a new file under this umask: the oracle
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode) == 0o666 & ~umask


def test_a_full_disk_during_safetensors_export_keeps_the_earlier_file_and_says_so_in_one_line(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    import errno

    import torch

    from kd_plugin import create_model
    from kd_plugin.models.weights_file import save_safetensors
    from kd_plugin.util.errors import KDPluginError

    path = str(tmp_path / "net.safetensors")
    torch.manual_seed(0)
    save_safetensors(create_model("cnn5"), path, {"arch": "cnn5_cifar"})
    before = Path(path).read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(KDPluginError, match="could not save .*No space left on device.* the previous file is "
                                            "unchanged") as info:
        save_safetensors(create_model("cnn5"), path, {"arch": "cnn5_cifar"})
    monkeypatch.undo()
    assert "\n" not in str(info.value) and Path(path).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]
