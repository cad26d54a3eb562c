"""The bad-input matrix of issue 8: every entry point, every kind of bad file or value -> exit code and one line.

``python -m tests.bad_input_cases`` (from the repository root) builds the inputs in a temporary directory,
runs every case in-process and prints the matrix as a Markdown table; tests/test_bad_input_matrix.py asserts it.
"""
import contextlib
import io
import os
import pickle
import random
import re
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import save_checkpoint
from kd_plugin.data import write_synthetic_cifar


class MarkerExploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def record_data_spans(path):
    """(start, length) of every stored record's bytes inside a torch zip archive."""
    raw = Path(path).read_bytes()
    spans = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            spans.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return spans


def _flip_inside_tensor_data(path, target):
    raw = bytearray(Path(path).read_bytes())
    start, length = max(record_data_spans(path), key=lambda span: span[1])
    raw[start + length // 2] ^= 0x04
    Path(target).write_bytes(bytes(raw))


def build_inputs(root):
    """Create every file the cases name under ROOT; returns {placeholder: path}."""
    p = {"root": root, "marker": os.path.join(root, "MARKER")}
    path = lambda name: os.path.join(root, name)  # noqa: E731
    p["data"] = write_synthetic_cifar(path("data"), train_images=40, test_images=20, seed=2)
    torch.manual_seed(0)
    p["good"] = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="good", dir=root)
    raw = Path(p["good"]).read_bytes()
    files = {"empty.pth.tar": b"", "truncated.pth.tar": raw[:len(raw) // 2],
             "random.pth.tar": random.Random(0).randbytes(5000), "plain.txt": b"x"}
    for name, content in files.items():
        Path(path(name)).write_bytes(content)
    _flip_inside_tensor_data(p["good"], path("bitflip.pth.tar"))
    torch.save({"state_dict": {}, "x": MarkerExploit(p["marker"])}, path("evil_zip.pth.tar"))
    with open(path("evil_raw.pth.tar"), "wb") as fh:
        pickle.dump({"state_dict": {}, "x": MarkerExploit(p["marker"])}, fh, protocol=2)
    torch.save({"state_dict": create_model("cnn5").state_dict(), "optimizer_type": torch.optim.lr_scheduler.StepLR},
               path("extra_global.pth.tar"))
    nan_state = create_model("cnn5").state_dict()
    nan_state["fc2.weight"][0, 0] = float("nan")
    torch.save({"epoch": 0, "arch": "cnn5_cifar", "state_dict": nan_state}, path("nan.pth.tar"))
    torch.save({"epoch": -3, "arch": "cnn5_cifar", "state_dict": create_model("cnn5").state_dict()},
               path("bad_epoch.pth.tar"))
    _bad_datasets(root, p)
    yamls = {
        "evil.yaml": f"training:\n  lr: !!python/object/apply:os.system ['touch {p['marker']}']\n",
        "malformed.yaml": "training:\n  lr: [0.1\n",
        "duplicate.yaml": "training: {epochs: 2}\ntraining: {epochs: 3}\n",
        "bomb.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
        "zero_lr.yaml": "training: {lr: 0}\n",
        "zero_temperature.yaml": "extensions:\n  kd: {class: KnowledgeDistillationExtension, teacher_arch: cnn5, "
                                 "temperature: 0}\n",
        "milestones.yaml": "lr_schedulers:\n  ms: {class: MultiStepLR, milestones: [30, 10]}\n",
        "unknown_loss.yaml": "extensions:\n  kd: {class: KnowledgeDistillationExtension, teacher_arch: cnn5, "
                             "loss: dkt}\n",
        "negative_loss_arg.yaml": "extensions:\n  kd: {class: KnowledgeDistillationExtension, teacher_arch: cnn5, "
                                  "loss: dkd, loss_args: {alpha: -1}}\n",
        "loss_args_list.yaml": "extensions:\n  kd: {class: KnowledgeDistillationExtension, teacher_arch: cnn5, "
                               "loss: dist, loss_args: [1, 2]}\n",
        "unknown_key.yaml": "training: {epochs: 2, batchsize: 8}\n",
        "big.yaml": "#" * (2**20 + 1),
        "unhashable.yaml": "? [1, 2]\n: 3\n",
    }
    for name, text in yamls.items():
        Path(path(name)).write_text(text)
        p[name.split(".")[0] + "_yaml"] = path(name)
    p.update({k.replace(".", "_").replace("_pth_tar", ""): path(k) for k in os.listdir(root)
              if k.endswith(".pth.tar") or k == "plain.txt"})
    p["changed"] = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="changed", dir=root,
                                   plugin_state={"run": {"seed": 7}, "identity": {
                                       "lr": 0.5, "T": 1.5, "seed": 7, "batch_size": 20, "optimizer": "SGD",
                                       "schedule": "none"}})
    p["emptied"] = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="emptied", dir=root,
                                   plugin_state={"identity": {}})
    p["missing"] = path("does_not_exist.pth.tar")
    p["a_dir"] = path("a_directory.pth.tar")
    os.makedirs(p["a_dir"], exist_ok=True)
    p["unwritable"] = os.path.join(path("plain.txt"), "sub")
    p["avnet_no_members"] = path("avnet_no_members.pth.tar")
    torch.save({"epoch": 0, "arch": "avnet_cifar", "state_dict": {"member_weights": torch.tensor([0.72, 0.28])}},
               p["avnet_no_members"])
    _trust_inputs(root, p)
    _ensemble_inputs(root, p)
    _dataset_inputs(root, p)
    return p


def _ensemble_inputs(root, p):
    """Issue 24: a member trained on another dataset, one with another number of classes, and a YAML ensemble."""
    p["other_dataset"] = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="other_dataset", dir=root,
                                         dataset="cifar100")
    p["other_classes"] = os.path.join(root, "other_classes.pt")
    torch.save(create_model("cnn5_cifar", num_classes=100).state_dict(), p["other_classes"])
    ensemble = create_model("ensemble_cifar", member_archs=["cnn5"])
    for name, config in (("config_unknown_arch", {"member_archs": ["nonet"]}), ("config_bad_key", {"bogus": 1}),
                         ("config_modules", {"members": [1]})):
        p[name] = save_checkpoint(0, "ensemble_cifar", ensemble, name=name, dir=root)
        content = torch.load(p[name], weights_only=True)
        torch.save({**content, "model_config": config}, p[name])
    p["ensemble_count_yaml"] = os.path.join(root, "ensemble_count.yaml")
    Path(p["ensemble_count_yaml"]).write_text(
        "extensions:\n  kd:\n    class: KnowledgeDistillationExtension\n    teacher_arch: [cnn5, cnn5]\n"
        f"    teacher_checkpoint: [{p['good']}]\npolicies:\n  - extension: {{instance_name: kd}}\n"
        "    starting_epoch: 0\n    ending_epoch: 1\n    frequency: 1\n")


def _bad_datasets(root, p):
    good = os.path.join(p["data"], "cifar-10-batches-py")
    for kind in ("truncated", "random", "evil", "shape"):
        folder = os.path.join(root, f"data_{kind}", "cifar-10-batches-py")
        os.makedirs(folder)
        for name in os.listdir(good):
            content = Path(good, name).read_bytes()
            if name == "test_batch":
                content = {"truncated": content[:len(content) // 3], "random": random.Random(1).randbytes(4096),
                           "evil": pickle.dumps(MarkerExploit(p["marker"]), protocol=2),
                           "shape": pickle.dumps({b"data": bytes(10), b"labels": [1]}, protocol=2)}[kind]
            Path(folder, name).write_bytes(content)
        p[f"data_{kind}"] = os.path.dirname(folder)
    p["data_missing"] = os.path.join(root, "no_such_data")
    os.makedirs(os.path.join(root, "data_empty"))
    p["data_empty"] = os.path.join(root, "data_empty")


@dataclass
class Case:
    name: str
    program: str          # compress_classifier | kd-plugin | main_KD_CIFAR10
    argv: str             # with {placeholders} from build_inputs
    message: str          # regex the stderr line must match (after "PROGRAM: error: ")
    code: int = 2
    hidden_modules: tuple = ()  # made unimportable for the case (an optional dependency that is not installed)


CC = "{data} -a cnn5 --epochs 1 -b 20 --no-progress -o {root}/out"
EVAL = "evaluate {ckpt} --data {data} -a cnn5 -o {root}/reports --repeats 1"
SWEEP = "sweep --data {data} --teacher cnn5={good} --student cnn5 --epochs 1 -o {root}/sw"
CASES = [
    Case("missing checkpoint", "compress_classifier", CC + " --resume-from {missing}",
         r"{missing}: checkpoint file not found"),
    Case("a directory as checkpoint", "compress_classifier", CC + " --resume-from {a_dir}",
         r"{a_dir}: is a directory, not a checkpoint file"),
    Case("a directory as schedule", "compress_classifier", CC + " --compress {a_dir}",
         r"{a_dir}: is a directory, not a YAML file"),
    Case("evaluate: a directory as checkpoint", "kd-plugin", EVAL.replace("{ckpt}", "{a_dir}"),
         r"{a_dir}: is a directory, not a checkpoint file"),
    Case("a file as data directory", "compress_classifier", CC.replace("{data}", "{good}"),
         r"{good}: is a file, not a data directory"),
    Case("empty checkpoint", "compress_classifier", CC + " --resume-from {empty}",
         r"{empty}: checkpoint file is empty"),
    Case("truncated checkpoint", "compress_classifier", CC + " --resume-from {truncated}",
         r"{truncated}: (corrupt checkpoint|not a loadable checkpoint)"),
    Case("random-bytes checkpoint", "compress_classifier", CC + " --resume-from {random}",
         r"{random}: not a loadable checkpoint"),
    Case("bit-flipped checkpoint", "compress_classifier", CC + " --resume-from {bitflip}",
         r"{bitflip}: corrupt checkpoint \(CRC mismatch in .*data/\d+\)"),
    Case("malicious pickle (zip)", "compress_classifier", CC + " --resume-from {evil_zip}",
         r"{evil_zip}: not a loadable checkpoint \(refused to unpickle: .*posix.system"),
    Case("malicious pickle (raw)", "compress_classifier", CC + " --resume-from {evil_raw}",
         r"{evil_raw}: not a loadable checkpoint \(refused to unpickle: .*posix.system"),
    Case("extra global", "compress_classifier", CC + " --resume-from {extra_global}",
         r"{extra_global}: not a loadable checkpoint \(refused to unpickle: .*StepLR"),
    Case("wrong arch", "compress_classifier", CC.replace("cnn5", "vgg7") + " --resume-from {good}",
         r"{good}: checkpoint is a cnn5_cifar, not the requested vgg7_bn_cifar"),
    Case("NaN weights", "compress_classifier", CC + " --exp-load-weights-from {nan}",
         r"{nan}: weights of fc2.weight contain NaN or Inf"),
    Case("negative epoch in checkpoint", "compress_classifier", CC + " --resume-from {bad_epoch}",
         r"{bad_epoch}: 'epoch' must be an integer >= 0, found -3"),
    Case("evaluate: malicious checkpoint", "compress_classifier", CC + " -e --resume-from {evil_zip}",
         r"{evil_zip}: not a loadable checkpoint \(refused to unpickle"),
    Case("missing data dir", "compress_classifier", CC.replace("{data}", "{data_missing}"),
         r"data directory '{data_missing}' does not exist"),
    Case("empty data dir", "compress_classifier", CC.replace("{data}", "{data_empty}"),
         r"{data_empty}: no CIFAR-10 python batches found"),
    Case("truncated data batch", "compress_classifier", CC.replace("{data}", "{data_truncated}"),
         r"{data_truncated}/cifar-10-batches-py/test_batch: not a readable CIFAR batch"),
    Case("random-bytes data batch", "compress_classifier", CC.replace("{data}", "{data_random}"),
         r"{data_random}/cifar-10-batches-py/test_batch: not a readable CIFAR batch"),
    Case("malicious data batch", "compress_classifier", CC.replace("{data}", "{data_evil}"),
         r"{data_evil}/cifar-10-batches-py/test_batch: not a readable CIFAR batch .*refusing to load posix.system"),
    Case("malformed data batch", "compress_classifier", CC.replace("{data}", "{data_shape}"),
         r"{data_shape}/cifar-10-batches-py/test_batch: 'data' must be a uint8 array"),
    Case("malicious YAML", "compress_classifier", CC + " --compress {evil_yaml}",
         r"{evil_yaml}: invalid YAML \(line 2, column 7\): could not determine a constructor .*os.system"),
    Case("malformed YAML", "compress_classifier", CC + " --compress {malformed_yaml}",
         r"{malformed_yaml}: invalid YAML \(line 3, column 1\)"),
    Case("duplicate YAML key", "compress_classifier", CC + " --compress {duplicate_yaml}",
         r"{duplicate_yaml}: invalid YAML .*duplicate key 'training'"),
    Case("YAML alias bomb", "compress_classifier", CC + " --compress {bomb_yaml}",
         r"{bomb_yaml}: invalid YAML .*anchors \(&name\) are not allowed"),
    Case("oversized YAML", "compress_classifier", CC + " --compress {big_yaml}", r"{big_yaml}: 1048577 bytes exceeds"),
    Case("YAML lr = 0", "compress_classifier", CC + " --compress {zero_lr_yaml}",
         r"{zero_lr_yaml}: training.lr must be a number > 0, got 0"),
    Case("YAML temperature = 0", "compress_classifier", CC + " --compress {zero_temperature_yaml}",
         r"{zero_temperature_yaml}: extensions.kd: temperature must be a number > 0"),
    Case("YAML milestones decreasing", "compress_classifier", CC + " --compress {milestones_yaml}",
         r"{milestones_yaml}: lr_schedulers.ms: milestones must be a strictly increasing list"),
    Case("YAML unknown key", "compress_classifier", CC + " --compress {unknown_key_yaml}",
         r"{unknown_key_yaml}: training.batchsize: unknown key"),
    Case("--lr 0", "compress_classifier", CC + " --lr 0", r"--lr must be a number > 0, got 0.0"),
    Case("--lr nan", "compress_classifier", CC + " --lr nan", r"--lr must be a number > 0, got nan"),
    Case("--epochs 0", "compress_classifier", CC.replace("--epochs 1", "--epochs 0"),
         r"--epochs must be an integer >= 1 \(at most 100000\), got 0"),
    Case("--batch-size 0", "compress_classifier", CC.replace("-b 20", "-b 0"),
         r"--batch-size must be an integer >= 1, got 0"),
    Case("--kd-temp 0", "compress_classifier", CC + " --kd-teacher cnn5 --kd-temp 0",
         r"--kd-temperature must be a number > 0, got 0.0"),
    Case("--kd-dw -1", "compress_classifier", CC + " --kd-teacher cnn5 --kd-dw -1", r"--kd-distill-wt must be >= 0"),
    Case("--epochs abc", "compress_classifier", CC + " --epochs abc", r"argument --epochs: invalid int value: 'abc'"),
    Case("unknown arch", "compress_classifier", CC.replace("cnn5", "resnet9000"), r"unknown model 'resnet9000'"),
    Case("unwritable output", "compress_classifier", CC.replace("{root}/out", "{unwritable}"),
         r"output directory {unwritable} is not writable \(Not a directory\)"),
    Case("evaluate: bit-flipped checkpoint", "kd-plugin", EVAL.replace("{ckpt}", "{bitflip}"),
         r"{bitflip}: corrupt checkpoint \(CRC mismatch"),
    Case("evaluate: malicious raw pickle", "kd-plugin", EVAL.replace("{ckpt}", "{evil_raw}"),
         r"{evil_raw}: not a loadable checkpoint \(refused to unpickle"),
    Case("evaluate: wrong arch", "kd-plugin", EVAL.replace("{ckpt}", "{good}").replace("cnn5", "resnet18"),
         r"{good}: checkpoint is a cnn5_cifar, not the requested resnet18_cifar"),
    Case("evaluate: missing checkpoint", "kd-plugin", EVAL.replace("{ckpt}", "{missing}"),
         r"{missing}: checkpoint file not found"),
    Case("evaluate: malicious data", "kd-plugin", EVAL.replace("{ckpt}", "{good}").replace("{data}", "{data_evil}"),
         r"{data_evil}/cifar-10-batches-py/test_batch: not a readable CIFAR batch"),
    Case("evaluate: unwritable output", "kd-plugin", EVAL.replace("{ckpt}", "{good}").replace("{root}/reports",
                                                                                            "{unwritable}"),
         r"output directory {unwritable} is not writable"),
    Case("evaluate: --repeats 0", "kd-plugin", EVAL.replace("{ckpt}", "{good}").replace("--repeats 1", "--repeats 0"),
         r"--repeats must be >= 1, got 0"),
    Case("make-data: unwritable output", "kd-plugin", "make-data {unwritable}",
         r"output directory {unwritable} is not writable"),
    Case("compress_classifier: --threads far beyond the cores", "compress_classifier",
         "{data} -a cnn5 --epochs 1 --cpu --no-progress --threads 100000 -o {root}/th",
         r"--threads must be an integer from 1 to \d+ \(4 x the \d+ CPU cores this process may use\), got 100000"),
    Case("make-data: over an existing dataset", "kd-plugin", "make-data {data}",
         r"{data} already holds a dataset \(cifar10 data\); nothing was written. Pass --force to overwrite it"),
    Case("make-data: too few images", "kd-plugin", "make-data {root}/made --train-images 5",
         r"--train-images and --test-images must be >= 10"),
    Case("unknown subcommand", "kd-plugin", "frobnicate", r"argument COMMAND: invalid choice: 'frobnicate'"),
    Case("main_KD: malicious checkpoint", "main_KD_CIFAR10", "{data} tst 5-CNN {evil_zip} -o {root}/mk --no-progress",
         r"{evil_zip}: not a loadable checkpoint \(refused to unpickle"),
    Case("main_KD: truncated checkpoint", "main_KD_CIFAR10",
         "{data} tst 5-CNN {truncated} -o {root}/mk --no-progress",
         r"{truncated}: (corrupt checkpoint|not a loadable checkpoint)"),
    Case("main_KD: wrong arch", "main_KD_CIFAR10", "{data} tst VGG7 {good} -o {root}/mk --no-progress",
         r"{good}: checkpoint is a cnn5_cifar, not the requested vgg7_bn_cifar"),
    Case("main_KD: missing data", "main_KD_CIFAR10", "{data_missing} tst 5-CNN {good} -o {root}/mk --no-progress",
         r"data directory '{data_missing}' does not exist"),
    Case("main_KD: ALPHA out of range", "main_KD_CIFAR10",
         "{data} trn n sgd 2 0 20 y 1.5 2 5-CNN {root}/s.pt 5-CNN {good} -o {root}/mk --no-progress",
         r"ALPHA must be a number in \[0, 1\], got '1.5'"),
    Case("main_KD: T = 0", "main_KD_CIFAR10",
         "{data} trn n sgd 2 0 20 y 0.5 0 5-CNN {root}/s.pt 5-CNN {good} -o {root}/mk --no-progress",
         r"T must be a number > 0, got '0'"),
    Case("main_KD: unwritable output", "main_KD_CIFAR10",
         "{data} trn n sgd 2 0 20 n 5-CNN {root}/s.pt -o {unwritable} --no-progress",
         r"output directory {unwritable} is not writable"),
    Case("-n ../x (a path, not a name)", "compress_classifier", CC + " -n ../x",
         r"-n/--name must be a name, not a path: '../x'"),
    Case("-n /abs (absolute)", "compress_classifier", CC + " -n {root}/abs",
         r"-n/--name must be a name, not a path: '{root}/abs'"),
    Case("-n a/b (separator)", "compress_classifier", CC + " -n a/b", r"-n/--name must be a name, not a path: 'a/b'"),
    Case("resume: changed experiment", "compress_classifier", CC + " --resume-from {changed}",
         r"{changed}: resuming would change the experiment \(lr: 0.5 -> 0.1, T: 1.5 -> none\); .* pass "
         r"--resume-accept-changes"),
    Case("resume: an emptied identity record", "compress_classifier", CC + " --resume-from {emptied}",
         r"{emptied}: the recorded experiment identity lacks batch_size, optimizer, schedule, seed, so this resume "
         r"cannot be checked; pass --reset-optimizer to take only the weights"),
    Case("main_KD: -n a path", "main_KD_CIFAR10",
         "{data} trn n sgd 2 0 20 n 5-CNN {root}/s.pt -o {root}/mk -n ../mk2 --no-progress",
         r"-n/--name must be a name, not a path: '../mk2'"),
    Case("--kd-loss unknown", "compress_classifier", CC + " --kd-teacher cnn5 --kd-loss dkt",
         r"unknown distillation loss 'dkt' \(known: at, crd, dist, dkd, fitnet, kd\)$"),
    Case("--kd-loss-arg negative", "compress_classifier", CC + " --kd-teacher cnn5 --kd-loss dkd --kd-loss-arg beta=-8",
         r"dkd argument beta must be a number >= 0, got -8$"),
    Case("--kd-loss-arg not the loss's", "compress_classifier",
         CC + " --kd-teacher cnn5 --kd-loss dist --kd-loss-arg alpha=1",
         r"loss dist has no argument 'alpha' \(its arguments: beta, gamma\)$"),
    Case("--kd-loss-arg wrong type", "compress_classifier",
         CC + " --kd-teacher cnn5 --kd-loss dkd --kd-loss-arg warmup=2.5",
         r"dkd argument warmup must be an integer >= 0, got 2.5$"),
    Case("--kd-loss-arg without a value", "compress_classifier", CC + " --kd-teacher cnn5 --kd-loss-arg beta",
         r"--kd-loss-arg: expected NAME=VALUE, got 'beta'$"),
    Case("--kd-temp -1 with dkd", "compress_classifier", CC + " --kd-teacher cnn5 --kd-loss dkd --kd-temp -1",
         r"--kd-temperature must be a number > 0, got -1.0$"),
    Case("YAML unknown loss", "compress_classifier", CC + " --compress {unknown_loss_yaml}",
         r"{unknown_loss_yaml}: extensions.kd: unknown distillation loss 'dkt' "
         r"\(known: at, crd, dist, dkd, fitnet, kd\)$"),
    Case("YAML negative loss argument", "compress_classifier", CC + " --compress {negative_loss_arg_yaml}",
         r"{negative_loss_arg_yaml}: extensions.kd: dkd argument alpha must be a number >= 0, got -1$"),
    Case("YAML loss_args not a mapping", "compress_classifier", CC + " --compress {loss_args_list_yaml}",
         r"{loss_args_list_yaml}: extensions.kd: loss_args must be a mapping of argument names to values"),
]
CASES += [  # mutual learning (issue 13)
    Case("--mutual with one peer", "compress_classifier", CC.replace("-a cnn5", "--mutual cnn5"),
         r"--mutual needs two or more peers, got \['cnn5'\]"),
    Case("--mutual unknown arch", "compress_classifier", CC.replace("-a cnn5", "--mutual cnn5 resnet9000"),
         r"unknown model 'resnet9000'"),
    Case("--mutual with --kd-teacher", "compress_classifier",
         CC.replace("-a cnn5", "--mutual cnn5 vgg6as") + " --kd-teacher cnn5",
         r"--mutual trains its peers together from scratch; it does not take --kd-teacher/--kd-resume"),
    Case("--mutual with -a", "compress_classifier", CC + " --mutual cnn5 vgg6as",
         r"--mutual names the models to train; drop -a/--arch"),
    Case("sweep: --launcher ray without Ray", "kd-plugin", SWEEP + " --launcher ray",
         r'--launcher ray needs Ray Tune: pip install "kd-plugin\[ray\]"', hidden_modules=("ray",)),
    Case("sweep: unreachable --address", "kd-plugin", SWEEP + " --launcher ray --address 127.0.0.1:1",
         r"--address 127.0.0.1:1: no Ray cluster reachable there within 5 s"),
    Case("sweep: --gpus-per-run without GPUs", "kd-plugin", SWEEP + " --launcher ray --gpus-per-run 64",
         r"--gpus-per-run 64: this machine has \d+ GPU\(s\)"),
    Case("sweep: --address without --launcher ray", "kd-plugin", SWEEP + " --address 127.0.0.1:1",
         r"--address needs --launcher ray"),
    Case("reproduce: unreachable --address", "kd-plugin", "reproduce -o {root}/rp --launcher ray --address "
         "127.0.0.1:1", r"--address 127.0.0.1:1: no Ray cluster reachable there within 5 s"),
    Case("export: ensemble without its members", "kd-plugin",
         "export {avnet_no_members} --format onnx -o {root}/exports",
         r"{avnet_no_members}: weights do not fit avnet_cifar \(missing \['resnet\."),
    Case("export: checkpoint of another arch", "kd-plugin", "export {good} -a vgg7 --format safetensors -o {root}/exp",
         r"{good}: checkpoint is a cnn5_cifar, not the requested vgg7_bn_cifar"),
    Case("export: unwritable output", "kd-plugin", "export {good} --format onnx -o {unwritable}",
         r"output directory {unwritable} is not writable"),
    Case("export: --int8 without calibration data", "kd-plugin", "export {good} --format onnx --int8 -o {root}/exp",
         r"int8 quantization needs calibration images: pass --calib-data DATA"),
]


def _copy_data(p, name, change_batch=None, meta=None):
    """A copy of {data} whose test batch (a dict with str keys) CHANGE_BATCH edits, or whose batches.meta is META."""
    folder = os.path.join(p["root"], name, "cifar-10-batches-py")
    os.makedirs(folder)
    source = os.path.join(p["data"], "cifar-10-batches-py")
    for file in os.listdir(source):
        content = Path(source, file).read_bytes()
        if file == "test_batch" and change_batch:
            batch = pickle.loads(content, encoding="bytes")
            change_batch(batch)
            content = pickle.dumps(batch, protocol=2)
        if file == "batches.meta" and meta is not None:
            content = pickle.dumps(meta, protocol=2)
        Path(folder, file).write_bytes(content)
    p[name] = os.path.dirname(folder)


def _trust_inputs(root, p):
    """Issue 12's inputs: malformed resume sections, wrong optimizer, bad labels and meta, state files."""
    path = lambda name: os.path.join(root, name)  # noqa: E731
    good = torch.load(p["good"], weights_only=True)
    rng = {"torch": torch.zeros(7, dtype=torch.uint8), "python": (3, (1, 2), None),
           "numpy": {"keys": torch.zeros(3, dtype=torch.int64), "pos": 0, "has_gauss": 0, "cached_gaussian": 0.0}}
    for name, change in (("kd_list", {"kd_plugin": []}), ("kd_string_batch", {"kd_plugin": {"resume_batch": "3"}}),
                         ("kd_rng_size", {"kd_plugin": {"rng": rng}}),
                         ("extras_string_epoch", {"extras": {"best_top1": 5.0, "best_epoch": "x"}}),
                         ("sched_states_dict", {"compression_sched": {"policy_states": {"a": 1}}})):
        torch.save({**good, **change}, path(f"{name}.pth.tar"))
        p[name] = path(f"{name}.pth.tar")
    model = create_model("cnn5")
    p["adam"] = save_checkpoint(0, "cnn5_cifar", model, torch.optim.Adam(model.parameters()), name="adam", dir=root)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(2, 3, 32, 32)).sum().backward()
    sgd.step()
    state = sgd.state_dict()
    state["state"][0]["momentum_buffer"] = torch.zeros(5)  # another shape than parameter 0
    p["bad_momentum"] = save_checkpoint(0, "cnn5_cifar", model, name="bad_momentum", dir=root)
    torch.save({**torch.load(p["bad_momentum"], weights_only=True), "optimizer_state_dict": state,
                "optimizer_type": "SGD"}, p["bad_momentum"])
    _copy_data(p, "data_badmeta", meta={b"label_names": [b"\xff\xfe"] * 10})
    _copy_data(p, "data_duplabels", lambda b: b.__setitem__(b"labels", list(b["labels"])))
    _copy_data(p, "data_floatlabels", lambda b: b.__setitem__("labels", [1.5] * len(b["labels"])))
    kd = "extensions:\n  kd: {{class: KnowledgeDistillationExtension, teacher_arch: cnn5{}}}\npolicies:\n" \
         "  - extension: {{instance_name: kd}}\n    {}\n"
    yamls = {"patience": "lr_schedulers:\n  p: {class: ReduceLROnPlateau, patience: 'x'}\n",
             "noweights": kd.format("", "starting_epoch: 0\n    ending_epoch: 2\n    frequency: 1"),
             "kd_epochs_list": kd.format(", random_teacher: true", "epochs: [0, 1]"),
             "kd_late": kd.format(", random_teacher: true", "starting_epoch: 5\n    ending_epoch: 9\n    frequency: 1")}
    for name, text in yamls.items():
        Path(path(f"{name}.yaml")).write_text(text)
        p[f"{name}_yaml"] = path(f"{name}.yaml")
    Path(path("bad.csv")).write_text("epoch,lr\nx,y\n")
    Path(path("good.csv")).write_text("epoch,lr\n0,0.1\n")
    p["bad_csv"], p["good_csv"] = path("bad.csv"), path("good.csv")
    cell = os.path.join(root, "sweep_bad", "runs", "cnn5-to-cnn5_s0")
    os.makedirs(cell)
    for name, text in (("result.json", '{"command": ["x"], "test_'), ("../../.lock", ""), ("../../sweep.json", "{}")):
        Path(cell, name).write_text(text)
    p["sweep_bad"] = os.path.join(root, "sweep_bad")
    os.makedirs(path("repro_bad"))
    Path(path("repro_bad/state.json")).write_text('{"profile": "smoke", "data": ')
    open(path("repro_bad/.lock"), "w").close()
    p["repro_bad"] = path("repro_bad")
    os.makedirs(path("repro_stages"))
    Path(path("repro_stages/state.json")).write_text('{"profile": "smoke", "stages": {"teachers": 5}, '
                                                     '"invocations": []}')
    open(path("repro_stages/.lock"), "w").close()
    p["repro_stages"] = path("repro_stages")


KD_CC = CC + " --kd-teacher cnn5 --kd-resume {good}"
CASES += [  # issue 12
    Case("training split of one image", "compress_classifier", CC + " --vs 0.99",
         r"1 training image\(s\) left after --validation-split 0.99: a training batch needs at least 2"),
    Case("--epochs 1000000000", "compress_classifier", CC.replace("--epochs 1", "--epochs 1000000000"),
         r"--epochs must be an integer >= 1 \(at most 100000\), got 1000000000"),
    Case("checkpoint: kd_plugin is a list", "compress_classifier", CC + " --resume-from {kd_list}",
         r"{kd_list}: malformed checkpoint: 'kd_plugin' must be a mapping, found list"),
    Case("checkpoint: string for an int", "compress_classifier", CC + " --resume-from {kd_string_batch}",
         r"{kd_string_batch}: malformed checkpoint: kd_plugin\['resume_batch'\] must be an integer"),
    Case("checkpoint: RNG state of wrong size", "compress_classifier", CC + " --resume-from {kd_rng_size}",
         r"{kd_rng_size}: malformed checkpoint: kd_plugin\['rng'\]: torch state must be a uint8 tensor"),
    Case("checkpoint: string best_epoch", "compress_classifier", CC + " --resume-from {extras_string_epoch}",
         r"{extras_string_epoch}: malformed checkpoint: extras\['best_epoch'\] must be an integer"),
    Case("checkpoint: policy states a dict", "compress_classifier", CC + " --resume-from {sched_states_dict}",
         r"{sched_states_dict}: malformed checkpoint: 'compression_sched' must be a mapping"),
    Case("schedule: distillation only after the run's epochs", "compress_classifier", CC + " --compress {kd_late_yaml}",
         r"{kd_late_yaml}: the distillation policy is scheduled for epochs 5..8, but the run trains epochs 0..0: it "
         r"would never distill"),
    Case("checkpoint: optimizer state of another shape", "compress_classifier", CC + " --resume-from {bad_momentum}",
         r"{bad_momentum}: optimizer state does not fit this run \(parameter 0's momentum_buffer has shape \(5,\), "
         r"the parameter \(32, 3, 3, 3\)\)"),
    Case("resume Adam checkpoint with SGD", "compress_classifier", CC + " --resume-from {adam}",
         r"{adam}: checkpoint was trained with Adam, this run uses SGD; resume with --optimizer adam"),
    Case("non-UTF-8 batches.meta", "compress_classifier", CC.replace("{data}", "{data_badmeta}"),
         r"{data_badmeta}/cifar-10-batches-py/batches.meta: 'label_names' are not UTF-8 text"),
    Case("both 'labels' and b'labels'", "compress_classifier", CC.replace("{data}", "{data_duplabels}"),
         r"{data_duplabels}/cifar-10-batches-py/test_batch: holds both 'labels' and b'labels'"),
    Case("float labels", "compress_classifier", CC.replace("{data}", "{data_floatlabels}"),
         r"{data_floatlabels}/cifar-10-batches-py/test_batch: 'labels' must be integers, found float"),
    Case("scheduler argument of the wrong type", "compress_classifier", CC + " --compress {patience_yaml}",
         r"{patience_yaml}: lr_schedulers.p: patience must be an integer >= 0, got 'x'"),
    Case("unwritable --teacher-cache", "compress_classifier", KD_CC + " --teacher-cache {unwritable}",
         r"--teacher-cache: output directory {unwritable} is not writable"),
    Case("--kd-teacher without weights", "compress_classifier", CC + " --kd-teacher cnn5",
         r"--kd-teacher cnn5: no teacher weights; pass --kd-resume CHECKPOINT .* or --kd-random-teacher"),
    Case("YAML KD without teacher_checkpoint", "compress_classifier", CC + " --compress {noweights_yaml}",
         r"{noweights_yaml}: extensions.kd: KnowledgeDistillationExtension teacher_arch cnn5: no teacher weights"),
    Case("--kd-start-epoch over an epochs list", "compress_classifier",
         CC.replace("--epochs 1", "--epochs 2") + " --compress {kd_epochs_list_yaml} --kd-start-epoch 1",
         r"--kd-start-epoch cannot move a KD policy declared with an explicit 'epochs' list"),
    Case("plot: bad CSV", "kd-plugin", "plot {bad_csv}", r"{bad_csv}: not a training log \(line 2: 'epoch'"),
    Case("plot: unwritable output", "kd-plugin", "plot {good_csv} -o {unwritable}",
         r"output directory {unwritable} is not writable"),
    Case("sweep: --extra-args sets the grid", "kd-plugin",
         "sweep --data {data} --teacher cnn5={good} --student cnn5 -T 2 -o {root}/sw --extra-args=--kd-temp=4",
         r"--extra-args may not set --kd-temperature: the sweep's --temperature axis sets it"),
    Case("sweep: truncated result.json", "kd-plugin",
         "sweep --data {data} --teacher cnn5={good} --student cnn5 -o {sweep_bad}",
         r"{sweep_bad}/runs/cnn5-to-cnn5_s0/result.json: the done marker of .* is truncated or malformed"),
    Case("reproduce: truncated state.json", "kd-plugin", "reproduce --profile smoke --data {data} -o {repro_bad}",
         r"{repro_bad}/state.json: the reproduce state file is truncated or malformed"),
    Case("reproduce --report-only: stages that are not objects", "kd-plugin", "reproduce --report-only -o "
         "{repro_stages}", r"{repro_stages}/state.json: the reproduce state file is malformed \(stage 'teachers' must "
         r"be an object with a status and seconds\)"),
    Case("reproduce --report-only: truncated state.json", "kd-plugin", "reproduce --report-only -o {repro_bad}",
         r"{repro_bad}/state.json: the reproduce state file is truncated or malformed"),
    Case("reproduce: --extra-args sets --seed", "kd-plugin",
         "reproduce --profile smoke --data {data} -o {root}/rp --extra-args=--seed=3",
         r"--extra-args may not set --seed: reproduce \(for every stage\) sets it"),
    Case("YAML unhashable key", "compress_classifier", CC + " --compress {unhashable_yaml}",
         r"{unhashable_yaml}: invalid YAML \(line 1, column 3\): mapping key \[1, 2\] is not a scalar"),
    Case("--normalization unknown name", "compress_classifier", CC + " --normalization imagenette",
         r"unknown normalization 'imagenette'; known: cifar, cifar100, distiller, imagenet"),
    Case("--normalization 3 numbers", "compress_classifier", CC + " --normalization 0.5,0.5,0.5",
         r"--normalization '0.5,0.5,0.5': give 2 numbers \(mean,std\) or 6"),
    Case("--normalization std 0", "compress_classifier", CC + " --normalization 0.5,0",
         r"--normalization '0.5,0': every std must be > 0"),
    Case("evaluate: --normalization nan", "kd-plugin", EVAL.replace("{ckpt}", "{good}") + " --normalization nan,1",
         r"--normalization 'nan,1': mean and std must be finite numbers"),
    Case("evaluate: --normalization words", "kd-plugin", EVAL.replace("{ckpt}", "{good}") + " --normalization a,b",
         r"--normalization 'a,b': not a known name and not numbers"),
    Case("main_KD: --normalization unknown", "main_KD_CIFAR10",
         "{data} tst 5-CNN {good} -o {root}/mk --no-progress --normalization bogus",
         r"unknown normalization 'bogus'"),
]
ENSEMBLE_CC = CC + " --kd-teacher cnn5 cnn5 --kd-resume {good}"
CASES += [  # issue 24: ensemble teachers
    Case("ensemble: fewer checkpoints than teachers", "compress_classifier", ENSEMBLE_CC,
         r"--kd-teacher: 2 teacher architecture\(s\) but 1 checkpoint\(s\) \(--kd-resume / teacher_checkpoint\); "
         r"give one checkpoint per teacher"),
    Case("ensemble: weights sum to 0", "compress_classifier", ENSEMBLE_CC + " {good} --kd-teacher-weights 1 -1",
         r"--kd-teacher-weights: the weights must sum to a positive number, got \[1.0, -1.0\] \(sum 0\)"),
    Case("ensemble: one weight for two members", "compress_classifier", ENSEMBLE_CC + " {good} --kd-teacher-weights 1",
         r"--kd-teacher-weights: 1 weight\(s\) for 2 ensemble member\(s\); give one per member"),
    Case("ensemble: member of another dataset", "compress_classifier",
         ENSEMBLE_CC + " {other_dataset}", r"{other_dataset}: a cifar100 checkpoint cannot teach a cifar10 student"),
    Case("ensemble: member with 100 classes", "compress_classifier",
         CC + " --kd-teacher cnn5 cnn5 --kd-resume {good} {other_classes}",
         r"{other_classes}: weights do not fit cnn5_cifar \(.*fc2.weight"),
    Case("ensemble: YAML checkpoint count", "compress_classifier", CC + " --compress {ensemble_count_yaml}",
         r"{ensemble_count_yaml}: extensions.kd: KnowledgeDistillationExtension teacher_arch: 2 teacher "
         r"architecture\(s\) but 1 checkpoint\(s\)"),
    Case("sweep: ensemble weight on one member only", "kd-plugin",
         "sweep --data {data} --teacher cnn5={good}@1,cnn5={good} --student cnn5 -o {root}/swe",
         r"--teacher 'cnn5=.*': give a @WEIGHT to every ensemble member or to none"),
    Case("ensemble checkpoint: unknown member arch", "kd-plugin",
         EVAL.replace("{ckpt}", "{config_unknown_arch}").replace(" -a cnn5", ""), r"unknown model 'nonet'"),
    Case("ensemble checkpoint: unknown model_config key", "kd-plugin",
         EVAL.replace("{ckpt}", "{config_bad_key}").replace(" -a cnn5", ""),
         r"model ensemble_cifar: .*unexpected keyword argument 'bogus'"),
    Case("ensemble checkpoint: modules in model_config", "kd-plugin",
         EVAL.replace("{ckpt}", "{config_modules}").replace(" -a cnn5", ""),
         r"{config_modules}: 'model_config' must map argument names to plain values"),
    Case("create-ensemble: ensemble without members", "kd-plugin", "create-ensemble ensemble -o {root}/e.pth.tar",
         r"ensemble_cifar needs its members: --member ARCH=CHECKPOINT\[@WEIGHT\] \(repeatable\)"),
]

def _dataset_inputs(root, p):
    """Issue 26: a checkpoint of CIFAR-100's classes, and a CIFAR-100 folder."""
    from kd_plugin.data import default_classes, write_synthetic

    p["c100_ckpt"] = save_checkpoint(0, "cnn5_cifar", create_model("cnn5", classes=default_classes("cifar100")),
                                     name="c100", dir=root)
    p["data100"] = write_synthetic(os.path.join(root, "data100"), 100, 100, dataset="cifar100")
    folder = write_synthetic(os.path.join(root, "folder"), 10, 5, dataset="imagefolder")
    os.makedirs(os.path.join(folder, "train", "fog"))  # an empty class
    p["folder_empty_class"] = folder
    broken = write_synthetic(os.path.join(root, "folder_broken"), 10, 5, dataset="imagefolder")
    with open(os.path.join(broken, "train", "amber", "00000.png"), "wb") as fh:
        fh.write(b"\x89PNG truncated")
    p["folder_broken"] = broken


CASES += [  # datasets (issue 26)
    Case("evaluate: checkpoint of other classes", "kd-plugin", EVAL.replace("{ckpt}", "{c100_ckpt}"),
         r"{c100_ckpt}: the network was trained on other classes than the data's \(it records 100 classes, the "
         r"data has 10\)"),
    Case("resume on data of other classes", "compress_classifier", CC + " --resume-from {c100_ckpt}",
         r"{c100_ckpt}: the network was trained on other classes than the data's \(it records 100 classes"),
    Case("--dataset contradicts the folder", "compress_classifier", CC + " --dataset cifar100",
         r"{data} holds cifar10 data, not cifar100"),
    Case("--dataset unknown", "compress_classifier", CC + " --dataset cifar1000",
         r"argument --dataset: invalid choice: 'cifar1000'"),
    Case("make-data: too few images for CIFAR-100", "kd-plugin",
         "make-data {root}/made --dataset cifar100 --train-images 50",
         r"--train-images and --test-images must be >= 100 \(one per cifar100 class\)"),
    Case("image folder: empty class", "compress_classifier", CC.replace("{data}", "{folder_empty_class}"),
         r"{folder_empty_class}/train/fog: class folder holds no images"),
    Case("image folder: unreadable image", "compress_classifier", CC.replace("{data}", "{folder_broken}"),
         r"{folder_broken}/train/amber/00000.png: not a readable image"),
    Case("reproduce cifar100 on CIFAR-10 data", "kd-plugin", "reproduce --profile cifar100 --data {data} -o {root}/rc",
         r"{data} holds cifar10 data, not cifar100"),
    Case("hint layer not a module", "compress_classifier",
         CC + " --kd-teacher cnn5 --kd-resume {good} --kd-loss fitnet --kd-loss-arg hint=layer9",
         r"'layer9' is not a module of the student cnn5_cifar \(its stages: features.3, features.7, features.11\)"),
    Case("attention stages do not pair", "compress_classifier",
         CC + " --kd-teacher cnn5 --kd-resume {good} --kd-loss kd+at --kd-loss-arg teacher_layers=features.3",
         r"loss at compares stages in pairs: the student has 3 \(features.3, features.7, features.11\), the "
         r"teacher 1"),
]
# Run through the installed console scripts as well, to prove the real commands behave the same.
SUBPROCESS_CASES = ["malicious pickle (zip)", "malicious YAML", "evaluate: bit-flipped checkpoint",
                    "main_KD: malicious checkpoint", "sweep: truncated result.json"]


def fill(template, inputs):
    return template.format(**inputs)


def entry_point(program):
    if program == "compress_classifier":
        from kd_plugin.cli.compress_classifier import main
    elif program == "kd-plugin":
        from kd_plugin.cli.kd_plugin import main
    else:
        from kd_plugin.cli.main_kd_cifar10 import main
    return main


@contextlib.contextmanager
def hidden_modules(names):
    """None in sys.modules makes ``import NAME`` raise ImportError; only NAMES are put back afterwards (not
    sys.modules as a whole, which would make the next case import fresh copies of everything)."""
    saved = {name: sys.modules[name] for name in names if name in sys.modules}
    sys.modules.update({name: None for name in names})
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def run_in_process(case, inputs):
    """(exit code, stderr lines) of the entry point's main(argv), as the console script would exit."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), hidden_modules(case.hidden_modules):
        try:
            code = entry_point(case.program)(fill(case.argv, inputs).split())
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue().splitlines()


def run_as_subprocess(case, inputs):
    import subprocess

    script = os.path.join(os.path.dirname(sys.executable), case.program)
    result = subprocess.run([script, *fill(case.argv, inputs).split()], capture_output=True, text=True, timeout=300)
    return result.returncode, result.stderr.splitlines()


def expected_line(case, inputs):
    """The regex the whole stderr line must match."""
    escaped = {k: re.escape(v) for k, v in inputs.items()}
    return re.compile(rf"^{re.escape(case.program)}: error: " + case.message.format(**escaped))


def matrix(results):
    rows = ["| # | entry point | case | exit | stderr |", "|---|---|---|---|---|"]
    for index, (case, code, lines) in enumerate(results, 1):
        shown = (lines[0] if lines else "") + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else "")
        shown = shown.replace("|", "\\|")
        rows.append(f"| {index} | {case.program} | {case.name} | {code} | `{shown}` |")
    return "\n".join(rows)


def main():
    with tempfile.TemporaryDirectory() as root:
        inputs = build_inputs(root)
        results = [(case, *run_in_process(case, inputs)) for case in CASES]
        text = matrix(results).replace(root, "$TMP")
    print(text)


if __name__ == "__main__":
    main()
