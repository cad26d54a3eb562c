"""Issue 8, clauses 1 and 3: checkpoints load without running pickled code, are validated, and are saved atomically."""
import argparse
import errno
import os
import pickle
import random
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from bad_input_cases import MarkerExploit, record_data_spans

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.engine.rundir import create_run_dir
from kd_plugin.protocol.scheduler import CompressionScheduler
from kd_plugin.util.errors import KDPluginError
from kd_plugin.util.fileio import write_json


class CallsSGD:
    """A crafted pickle that asks the unpickler to *call* an allow-listed class."""

    def __reduce__(self):
        return torch.optim.SGD, ([torch.zeros(1, requires_grad=True)],)


@pytest.fixture
def saved(tmp_path):
    """(path, model) of a kd-plugin checkpoint with optimizer and scheduler state."""
    torch.manual_seed(0)
    model = create_model("cnn5")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = save_checkpoint(3, "cnn5_cifar", model, optimizer, CompressionScheduler(model),
                           {"current_top1": 40.0, "best_top1": 41.0, "best_epoch": 2}, dir=str(tmp_path))
    return path, model


def one_line_error(path, match):
    """Load PATH expecting a KDPluginError: one line, naming the file, matching MATCH."""
    with pytest.raises(KDPluginError, match=match) as info:
        load_checkpoint_file(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "weights_only=False" not in message
    return message


def test_every_load_goes_through_weights_only_on_cpu(saved, tmp_path, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint_file(saved[0])
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "x": MarkerExploit(tmp_path / "marker")}, evil)
    with pytest.raises(KDPluginError):
        load_checkpoint_file(str(evil))
    assert len(calls) == 2, "a refused file must not be retried another way"
    assert all(c.get("weights_only") is True and c.get("map_location") == "cpu" for c in calls)


def test_distiller_pickled_optimizer_class_loads_as_its_name(tmp_path):
    model = create_model("cnn5")
    path = tmp_path / "distiller.pth.tar"
    torch.save({"epoch": 7, "arch": "cnn5_cifar", "state_dict": model.state_dict(), "optimizer_type": torch.optim.SGD,
                "optimizer_state_dict": torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}, path)
    checkpoint = load_checkpoint_file(str(path))
    assert checkpoint.kind == "distiller" and checkpoint.epoch == 7
    assert checkpoint.content["optimizer_type"] == "SGD"


def test_an_allow_listed_class_is_never_called(tmp_path, monkeypatch):
    constructed = []
    real_init = torch.optim.SGD.__init__
    monkeypatch.setattr(torch.optim.SGD, "__init__", lambda self, *a, **k: constructed.append(a) or real_init(
        self, *a, **k))
    path = tmp_path / "calls_sgd.pth.tar"
    torch.save({"state_dict": create_model("cnn5").state_dict(), "x": CallsSGD()}, path)
    constructed.clear()
    one_line_error(path, "refused to unpickle: refusing to call SGD")
    assert constructed == []


def _zip_torch_file(path, obj):
    torch.save(obj, path)


def _legacy_torch_file(path, obj):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _raw_pickle(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


@pytest.mark.parametrize("writer", [_zip_torch_file, _legacy_torch_file, _raw_pickle], ids=["zip", "legacy", "raw"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth.tar"
    writer(path, {"state_dict": {}, "x": MarkerExploit(marker)})
    one_line_error(path, "refused to unpickle")
    assert not marker.exists()


@pytest.mark.parametrize("extra,named", [
    (torch.optim.lr_scheduler.StepLR, "GLOBAL torch.optim.lr_scheduler.StepLR was not an allowed"),
    (os.system, "GLOBAL posix.system"), (argparse.Namespace(lr=0.1), "GLOBAL argparse.Namespace was not an allowed"),
    (torch.nn.Linear(2, 2), "GLOBAL torch.nn.modules.linear.Linear was not an allowed")],
    ids=["other-class", "function", "namespace", "module"])
def test_globals_outside_the_allow_list_are_refused_by_name(tmp_path, extra, named):
    path = tmp_path / "extra.pth.tar"
    torch.save({"state_dict": create_model("cnn5").state_dict(), "optimizer_type": extra}, path)
    message = one_line_error(path, "refused to unpickle: ")
    assert named in message and "Please use" not in message


def _content(**changes):
    content = {"epoch": 1, "arch": "cnn5_cifar", "state_dict": create_model("cnn5").state_dict(),
               "extras": {"current_top1": 10.0, "best_top1": 10.0}}
    for key, value in changes.items():
        if key == "weight":
            content["state_dict"]["fc2.weight"][0, 0] = value
        elif key in ("current_top1", "best_top1"):
            content["extras"][key] = value
        else:
            content[key] = value
    return content


SCHEMA_CASES = {
    "negative-epoch": (_content(epoch=-1), "'epoch' must be an integer >= 0"),
    "string-epoch": (_content(epoch="3"), "'epoch' must be an integer >= 0"),
    "bool-epoch": (_content(epoch=True), "'epoch' must be an integer >= 0"),
    "float-epoch": (_content(epoch=2.0), "'epoch' must be an integer >= 0"),
    "arch-not-a-string": (_content(arch=5), "'arch' must be a string"),
    "unknown-arch": (_content(arch="resnet9000"), "does not know"),
    "nan-accuracy": (_content(current_top1=float("nan")), "must be a finite number"),
    "inf-accuracy": (_content(best_top1=float("inf")), "must be a finite number"),
    "text-accuracy": (_content(best_top1="high"), "must be a finite number"),
    "extras-not-a-mapping": (_content(extras=[1, 2]), "'extras' must be a mapping"),
    "state-dict-list": (_content(state_dict=[torch.zeros(1)]), "non-empty mapping"),
    "state-dict-empty": (_content(state_dict={}), "non-empty mapping"),
    "state-dict-number": (_content(state_dict={"fc2.weight": 1.0}), "not a named tensor"),
    "nan-weight": (_content(weight=float("nan")), "fc2.weight contain NaN or Inf"),
    "inf-weight": (_content(weight=float("-inf")), "fc2.weight contain NaN or Inf"),
    "not-a-dict": ([torch.zeros(1)], "expected a checkpoint dictionary"),
    "no-state-dict": ({"epoch": 1, "weights": "none"}, "neither a checkpoint"),
}


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_schema_violations_are_named(tmp_path, case):
    content, match = SCHEMA_CASES[case]
    path = tmp_path / f"{case}.pth.tar"
    torch.save(content, path)
    one_line_error(path, match)


def test_requested_arch_must_equal_the_checkpoints(saved):
    with pytest.raises(KDPluginError, match="is a cnn5_cifar, not the requested resnet18_cifar"):
        load_model(saved[0], "resnet18")


def test_strict_load_names_the_mismatch(tmp_path):
    state = create_model("cnn5").state_dict()
    missing = {k: v for k, v in state.items() if k != "fc2.bias"}
    reshaped = {**state, "fc2.weight": torch.zeros(3, 128)}
    for name, state_dict, match in (("missing", missing, r"missing \['fc2.bias'\]"),
                                    ("extra", {**state, "fc3.weight": torch.zeros(1)}, r"unexpected \['fc3.weight'\]"),
                                    ("shape", reshaped, "size mismatch for fc2.weight")):
        path = tmp_path / f"{name}.pt"
        torch.save(state_dict, path)
        with pytest.raises(KDPluginError, match=match) as info:
            load_model(str(path), "cnn5")
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_module_prefixes_are_stripped_explicitly_and_collisions_refused(tmp_path):
    state = create_model("cnn5").state_dict()
    wrapped = tmp_path / "wrapped.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, wrapped)
    model, _ = load_model(str(wrapped), "cnn5")
    assert torch.equal(model.fc2.weight, state["fc2.weight"])
    both = tmp_path / "both.pt"
    torch.save({**state, "module.fc2.weight": state["fc2.weight"]}, both)
    one_line_error(both, "holds fc2.weight twice")


def test_torch_writes_crcs_and_any_single_bit_flip_is_caught_or_harmless(saved, tmp_path):
    path, model = saved
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None and all(i.CRC for i in archive.infolist() if i.file_size)
    raw = Path(path).read_bytes()
    rng = random.Random(0)
    data_positions = [start + rng.randrange(length) for start, length in record_data_spans(path) if length]
    anywhere = [rng.randrange(len(raw)) for _ in range(150)]
    outcomes = {"refused": 0, "identical": 0}
    for index, position in enumerate(data_positions + anywhere):
        flipped = bytearray(raw)
        flipped[position] ^= 1 << rng.randrange(8)
        target = tmp_path / f"flip{index}.pth.tar"
        target.write_bytes(bytes(flipped))
        try:
            checkpoint = load_checkpoint_file(str(target))
        except KDPluginError as err:
            assert str(target) in str(err) and "\n" not in str(err)
            outcomes["refused"] += 1
            continue
        assert index >= len(data_positions), f"flip inside record data at byte {position} loaded silently"
        assert checkpoint.epoch == 3 and checkpoint.arch == "cnn5_cifar"
        for key, value in model.state_dict().items():
            assert torch.equal(checkpoint.state_dict[key], value), f"flip at byte {position} changed {key}"
        outcomes["identical"] += 1
    assert outcomes["refused"] >= len(data_positions)


@pytest.mark.parametrize("keep", [0.5, 0.99, -1, -22], ids=["half", "99pct", "last-byte", "no-eocd"])
def test_truncated_checkpoint(saved, tmp_path, keep):
    raw = Path(saved[0]).read_bytes()
    cut = int(len(raw) * keep) if keep > 0 else len(raw) + keep
    path = tmp_path / "truncated.pth.tar"
    path.write_bytes(raw[:cut])
    one_line_error(path, "corrupt checkpoint|not a loadable checkpoint")


@pytest.mark.parametrize("content", [b"", os.urandom(0) + random.Random(1).randbytes(4096), b"PK\x03\x04" + bytes(64)],
                         ids=["empty", "random-bytes", "zip-magic-only"])
def test_empty_random_and_fake_zip_files(tmp_path, content):
    path = tmp_path / "bad.pth.tar"
    path.write_bytes(content)
    one_line_error(path, "empty|not a loadable checkpoint|corrupt checkpoint")


def test_missing_and_directory_paths(tmp_path):
    one_line_error(tmp_path / "absent.pth.tar", "not found")
    one_line_error(tmp_path, "is a directory, not a checkpoint file")


# --- saving -------------------------------------------------------------------------------------------------

def _leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def _disk_full_torch_save(obj, fh, *args, **kwargs):
    fh.write(b"PK\x03\x04" + bytes(1000))
    raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                       "data/3: file write failed")


def _disk_full_fsync(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failure", [("torch.save", _disk_full_torch_save), ("os.fsync", _disk_full_fsync)],
                         ids=["torch.save", "fsync"])
def test_failed_save_keeps_the_previous_checkpoint_and_removes_the_temp_file(saved, tmp_path, monkeypatch, failure):
    path, model = saved
    before = Path(path).read_bytes()
    target, replacement = failure
    module, name = target.split(".")
    monkeypatch.setattr({"torch": torch, "os": os}[module], name, replacement)
    with torch.no_grad():
        model.fc2.weight.add_(1.0)
    with pytest.raises(KDPluginError, match="could not save .* the previous file is unchanged") as info:
        save_checkpoint(4, "cnn5_cifar", model, dir=str(tmp_path))
    monkeypatch.undo()
    assert path in str(info.value) and "\n" not in str(info.value)
    assert Path(path).read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert load_checkpoint_file(path).epoch == 3


def test_save_writes_a_temp_file_beside_the_target_fsyncs_then_renames(saved, tmp_path, monkeypatch):
    path, model = saved
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda src, dst: events.append(("replace", os.path.dirname(src) ==
                                                                       os.path.dirname(dst))) or real_replace(src, dst))
    save_checkpoint(5, "cnn5_cifar", model, dir=str(tmp_path))
    monkeypatch.undo()
    assert events == [("fsync", False), ("replace", True), ("fsync", True)]  # file, rename, directory
    assert load_checkpoint_file(path).epoch == 5 and _leftovers(tmp_path) == []


def test_best_copy_is_atomic_too(saved, tmp_path, monkeypatch):
    path, model = saved
    best = os.path.join(tmp_path, "best.pth.tar")
    save_checkpoint(3, "cnn5_cifar", model, is_best=True, dir=str(tmp_path))
    best_before = Path(best).read_bytes()
    real_replace = os.replace

    def fail_on_best(src, dst):
        if dst.endswith("best.pth.tar"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_best)
    with pytest.raises(KDPluginError, match="best.pth.tar: could not save"):
        save_checkpoint(4, "cnn5_cifar", model, is_best=True, dir=str(tmp_path))
    monkeypatch.undo()
    assert Path(best).read_bytes() == best_before and _leftovers(tmp_path) == []


def test_reports_are_written_atomically(tmp_path, monkeypatch):
    report = tmp_path / "card.json"
    write_json(str(report), {"top1": 50.0})
    monkeypatch.setattr(os, "fsync", _disk_full_fsync)
    with pytest.raises(KDPluginError, match="card.json: could not save"):
        write_json(str(report), {"top1": 60.0})
    monkeypatch.undo()
    assert report.read_text() == '{\n  "top1": 50.0\n}\n' and _leftovers(tmp_path) == []


def test_an_existing_run_directory_is_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda fmt: "2026.01.01-000000")
    taken = tmp_path / "exp___2026.01.01-000000"
    taken.mkdir()
    (taken / "exp_checkpoint.pth.tar").write_bytes(b"precious")
    first = create_run_dir(str(tmp_path), "exp")
    second = create_run_dir(str(tmp_path), "exp")
    assert len({str(taken), first, second}) == 3
    assert os.listdir(first) == [] and (taken / "exp_checkpoint.pth.tar").read_bytes() == b"precious"
