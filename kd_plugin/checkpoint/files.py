"""Checkpoints in Distiller's format, saved atomically and loaded without ever running pickled code.

Written keys: ``epoch, state_dict, arch, is_parallel, dataset, optimizer_state_dict, optimizer_type,
compression_sched, extras`` (Distiller's), plus ``kd_plugin`` holding what exact resume needs. Distiller
pickles ``optimizer_type`` as a class; we write its name as a string and read Distiller's class objects
through a narrow allow-list. Readable flavours: ours, Distiller's ``.pth.tar``, and plain state_dicts
(the original's ``.pt`` files), with or without DataParallel ``module.`` components.
"""
import math
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field

import torch

from ..models import create_model, resolve_arch
from ..models.registry import check_model_config
from ..util.errors import KDPluginError
from ..util.fileio import atomic_write, require_file
from ..util.normalization import (
    DEFAULT,
    DISTILLER,
    from_record,
    normalization_of,
    set_normalization,
)
from .normalization import resolve_normalization
from .schema import check_resume_sections

# What a checkpoint without a normalization record was trained on, by who wrote it (README "Checkpoints across
# both tools"): Distiller's loader normalizes with 0.5/0.5; the original's .pt files and kd-plugin files written
# before the record existed used the original's mean/std.
ASSUMED_NORMALIZATION = {"distiller": DISTILLER, "state_dict": DEFAULT, "kd-plugin": DEFAULT}

# Classes Distiller pickles by reference: its optimizer_type.
PICKLED_CLASSES = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad,
                   torch.optim.Adadelta, torch.optim.Adamax, torch.optim.ASGD, torch.optim.NAdam, torch.optim.RAdam)


class ClassReference:
    """What an allow-listed class loads as. torch's unpickler would *call* an allow-listed class if a crafted
    pickle asked it to; this stand-in can be named by a checkpoint but refuses to be called or instantiated."""

    def __init__(self, cls):
        self.name = cls.__name__

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"refusing to call {self.name} while loading")

    def __repr__(self):
        return f"<class reference {self.name}>"


SAFE_GLOBALS = [(ClassReference(cls), f"{cls.__module__}.{cls.__qualname__}") for cls in PICKLED_CLASSES]


def optimizer_class(optimizer_type):
    """The allow-listed optimizer class that a checkpoint's ``optimizer_type`` (name or ClassReference) names;
    for code that calls it, as Distiller's ``load_checkpoint`` does."""
    name = optimizer_type.name if isinstance(optimizer_type, ClassReference) else optimizer_type
    for cls in PICKLED_CLASSES:
        if cls.__name__ == name:
            return cls
    raise KDPluginError(f"optimizer_type {name!r} is not one of the allowed optimizers "
                        f"({', '.join(c.__name__ for c in PICKLED_CLASSES)})")
MAX_CHECKPOINT_BYTES = 8 * 2**30
ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class Checkpoint:
    path: str
    state_dict: dict
    arch: str = None
    epoch: int = None
    kind: str = "state_dict"
    content: dict = field(default_factory=dict)

    @property
    def extras(self):
        return self.content.get("extras") or {}

    @property
    def plugin_state(self):
        return self.content.get("kd_plugin") or {}

    def normalization(self, override=None):
        """(Normalization, where it came from) of this network: resolve_normalization with this checkpoint."""
        return resolve_normalization(override, self)

    def recorded_normalization(self):
        """(Normalization, where it came from): the checkpoint's record, or the documented assumption for its kind
        (ASSUMED_NORMALIZATION)."""
        record = self.content.get("normalization")
        if record is not None:
            return from_record(record, self.path), "recorded in the checkpoint"
        return ASSUMED_NORMALIZATION[self.kind], f"assumed for a {self.kind} checkpoint without a record"

    @property
    def classes(self):
        """The class names the network was trained on (label order), or None when the file records none."""
        recorded = self.content.get("classes")
        if recorded is None:
            return None
        if not isinstance(recorded, (list, tuple)) or not recorded or not all(isinstance(c, str) for c in recorded):
            raise KDPluginError(f"{self.path}: 'classes' must be a non-empty list of class names")
        return tuple(recorded)


def check_classes(checkpoint, classes, what="the data"):
    """Refuse CHECKPOINT when it records other classes than CLASSES (the dataset's names, label order)."""
    recorded = checkpoint.classes
    if classes is None or recorded is None or tuple(classes) == recorded:
        return checkpoint
    if len(recorded) != len(classes):
        detail = f"it records {len(recorded)} classes, {what} has {len(classes)}"
    else:
        first = next(i for i, (a, b) in enumerate(zip(recorded, classes, strict=True)) if a != b)
        detail = f"class {first} is {recorded[first]!r} there and {classes[first]!r} in {what}"
    raise KDPluginError(f"{checkpoint.path}: the network was trained on other classes than {what}'s ({detail})")


def normalization_line(model, how):
    """The line every command prints about the normalization it fed a network with."""
    return f"normalization of {getattr(model, 'arch', 'the model')}: {normalization_of(model).describe()}, {how}"


def checkpoint_paths(directory, name=None):
    prefix = f"{name}_" if name else ""
    return (os.path.join(directory, f"{prefix}checkpoint.pth.tar"), os.path.join(directory, f"{prefix}best.pth.tar"))


def save_checkpoint(epoch, arch, model, optimizer=None, scheduler=None, extras=None, is_best=False, name=None,
                    dir=".", plugin_state=None, dataset=None):
    """Distiller's ``apputils.save_checkpoint``, atomic; returns the checkpoint's path."""
    content = checkpoint_content(epoch, arch, model, optimizer, scheduler, extras, plugin_state, dataset)
    path, best_path = checkpoint_paths(dir, name)
    write_checkpoint(path, content)
    if is_best:
        atomic_write(best_path, lambda fh: _copy_into(path, fh))
    return path


def checkpoint_content(epoch, arch, model, optimizer=None, scheduler=None, extras=None, plugin_state=None,
                       dataset=None, state_dict=None):
    """The dictionary of a Distiller-format checkpoint (what ``save_checkpoint`` writes); STATE_DICT, when
    given, holds the weights to write instead of MODEL's current ones; DATASET defaults to the model's."""
    state_dict = getattr(model, "module", model).state_dict() if state_dict is None else state_dict
    content = {
        "epoch": int(epoch),
        "state_dict": state_dict,
        "arch": arch,
        "is_parallel": isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)),
        "dataset": dataset or getattr(getattr(model, "module", model), "dataset", None) or "cifar10",
    }
    if optimizer is not None:
        content["optimizer_state_dict"] = optimizer.state_dict()
        content["optimizer_type"] = type(optimizer).__name__
    if scheduler is not None:
        content["compression_sched"] = scheduler.state_dict()
    if extras is not None:
        content["extras"] = extras
    if plugin_state is not None:
        content["kd_plugin"] = plugin_state
    content["normalization"] = normalization_of(getattr(model, "module", model)).record()  # Distiller ignores it
    config = getattr(getattr(model, "module", model), "model_config", None)
    if config is not None:  # what the factory needs before the weights fit (an ensemble's members)
        content["model_config"] = config()
    classes = getattr(getattr(model, "module", model), "classes", None)
    if classes is not None:  # the dataset's class names, in label order (Distiller ignores it too)
        content["classes"] = [str(c) for c in classes]
    return content


def write_checkpoint(path, content):
    """Write CONTENT (a checkpoint dictionary) to PATH atomically; returns PATH."""
    atomic_write(path, lambda fh: torch.save(content, fh))
    return path


def _copy_into(src, fh):
    with open(src, "rb") as source:
        shutil.copyfileobj(source, fh)


def verify_archive(path, kind="checkpoint"):
    """torch does not check zip CRCs; a flipped bit in tensor data would load silently without this.

    torch reads a file as a zip archive iff it starts with a local-header signature, so the same test decides
    here (the legacy pre-1.6 format carries no checksums to verify)."""
    with open(path, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise KDPluginError(f"{path}: corrupt {kind} archive ({err})") from None
    if bad is not None:
        raise KDPluginError(f"{path}: corrupt {kind} (CRC mismatch in {bad})")


_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")


def _refusal_reason(err):
    """The informative line of torch's multi-line message (never its advice to retry with weights_only=False)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    informative = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines
                   if not line.startswith(_TORCH_ADVICE)]
    informative = [line.split(". Please use")[0] for line in informative if line]
    reason = informative[0].rstrip(".") if informative else type(err).__name__
    refused = lines and lines[0].startswith(_TORCH_ADVICE[0]) or any("GLOBAL" in line for line in informative)
    return "refused to unpickle: " + reason if refused else reason


def read_checkpoint_file(path):
    """torch.load with weights_only=True and the allow-list; no fallback to full pickle, ever."""
    if not isinstance(path, str) or not path:
        raise KDPluginError("no checkpoint path given")
    require_file(path, "checkpoint file")
    size = os.path.getsize(path)
    if size == 0:
        raise KDPluginError(f"{path}: checkpoint file is empty")
    if size > MAX_CHECKPOINT_BYTES:
        raise KDPluginError(f"{path}: checkpoint of {size} bytes exceeds the {MAX_CHECKPOINT_BYTES} byte limit")
    verify_archive(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, OSError, UnicodeDecodeError, MemoryError, OverflowError, zipfile.BadZipFile) as err:
        raise KDPluginError(f"{path}: not a loadable checkpoint ({_refusal_reason(err)})") from None


def normalize_state_dict_keys(state_dict, path="checkpoint"):
    """Drop DataParallel 'module' path components (Distiller wraps whole models, or only VGG features)."""
    normalized = {}
    for key, value in state_dict.items():
        name = ".".join(p for p in key.split(".") if p != "module")
        if name in normalized:
            raise KDPluginError(f"{path}: state_dict holds {name} twice (with and without a 'module.' prefix)")
        normalized[name] = value
    return normalized


def _check_state_dict(path, state_dict):
    if not isinstance(state_dict, dict) or not state_dict:
        raise KDPluginError(f"{path}: 'state_dict' must be a non-empty mapping of names to tensors")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise KDPluginError(f"{path}: state_dict entry {key!r} is not a named tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise KDPluginError(f"{path}: weights of {key} contain NaN or Inf")


def _check_schema(path, content):
    epoch = content.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise KDPluginError(f"{path}: 'epoch' must be an integer >= 0, found {epoch!r}")
    arch = content.get("arch")
    if arch is not None and not isinstance(arch, str):
        raise KDPluginError(f"{path}: 'arch' must be a string, found {type(arch).__name__}")
    extras = content.get("extras")
    if extras is not None:
        if not isinstance(extras, dict):
            raise KDPluginError(f"{path}: 'extras' must be a mapping")
        for key in ("current_top1", "best_top1"):
            value = extras.get(key)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise KDPluginError(f"{path}: extras[{key!r}] must be a finite number, found {value!r}")
    check_resume_sections(path, content)


def load_checkpoint_file(path):
    """Read and validate any supported flavour into a Checkpoint (arch canonicalised when known)."""
    content = read_checkpoint_file(path)
    if not isinstance(content, dict):
        raise KDPluginError(f"{path}: expected a checkpoint dictionary, found {type(content).__name__}")
    if "state_dict" in content:
        _check_schema(path, content)
        state_dict = content["state_dict"]
        kind = "kd-plugin" if "kd_plugin" in content else "distiller"
    elif content and all(isinstance(v, torch.Tensor) for v in content.values()):
        state_dict, content, kind = content, {}, "state_dict"
    else:
        raise KDPluginError(f"{path}: neither a checkpoint (no 'state_dict') nor a plain state_dict")
    _check_state_dict(path, state_dict)
    arch = content.get("arch")
    if arch is not None:
        try:
            arch = resolve_arch(arch)
        except KDPluginError:
            raise KDPluginError(f"{path}: checkpoint holds arch {arch!r}, which kd-plugin does not know") from None
    if isinstance(content.get("optimizer_type"), ClassReference):
        content["optimizer_type"] = content["optimizer_type"].name
    return Checkpoint(path, normalize_state_dict_keys(state_dict, path), arch, content.get("epoch"), kind, content)


def check_arch(checkpoint, wanted):
    """Refuse a checkpoint recorded as another architecture than WANTED (a plain state_dict records none)."""
    if wanted and checkpoint.arch and wanted != checkpoint.arch:
        raise KDPluginError(f"{checkpoint.path}: checkpoint is a {checkpoint.arch}, not the requested {wanted}")
    return checkpoint


def load_weights(model, checkpoint):
    """Strict load; a mismatch names the first missing/unexpected keys instead of a traceback."""
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as err:
        result = model.state_dict().keys()
        missing = [k for k in result if k not in checkpoint.state_dict][:3]
        unexpected = [k for k in checkpoint.state_dict if k not in result][:3]
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err)]
        detail = f"missing {missing}, unexpected {unexpected}" if missing or unexpected else problems[0].rstrip(".")
        raise KDPluginError(f"{checkpoint.path}: weights do not fit {getattr(model, 'arch', 'the model')} ({detail})") \
            from None
    return model


def model_config(checkpoint: Checkpoint) -> dict:
    """The factory arguments a checkpoint records (``model_config``: an ensemble's member architectures, weights
    and mode), checked to be plain names and numbers; {} when it records none."""
    config = checkpoint.content.get("model_config")
    return {} if config is None else check_model_config(config, f"{checkpoint.path}: 'model_config'")


def load_model(path, arch=None, normalization=None, classes=None, **model_kwargs):
    """(model, checkpoint) from a checkpoint file; ``arch`` is required for plain state_dicts and checked otherwise.
    The model expects the checkpoint's normalization (NORMALIZATION, a name or mean,std text, overrides it);
    ``checkpoint.normalization_note`` says which it is and why (see normalization_line). It has the classes the
    checkpoint records; CLASSES (the data's), when given, must be those (a file without a record takes them)."""
    wanted = resolve_arch(arch) if arch is not None else None
    checkpoint = check_classes(check_arch(load_checkpoint_file(path), wanted), classes)
    if checkpoint.classes is not None or classes is not None:
        model_kwargs["classes"] = checkpoint.classes or classes
    name = wanted or checkpoint.arch
    if name is None:
        raise KDPluginError(f"{path}: a plain state_dict names no architecture; pass the arch explicitly")
    used, how = checkpoint.normalization(normalization)
    model = set_normalization(create_model(name, **{**model_config(checkpoint), **model_kwargs}), used)
    checkpoint.normalization_note = how
    return load_weights(model, checkpoint), checkpoint


def network_to_inspect(weights, arch=None, normalization=None, classes=None, dataset=None):
    """(model, why its normalization): the checkpoint WEIGHTS' network (its classes checked against CLASSES), or
    a fresh ARCH with CLASSES; either fed as resolve_normalization says (the NORMALIZATION flag first)."""
    if weights:
        model, checkpoint = load_model(weights, arch, normalization, classes)
        return model, checkpoint.normalization_note
    used, how = resolve_normalization(normalization, None, arch, dataset)
    return set_normalization(create_model(arch, dataset=dataset, classes=classes), used), how
