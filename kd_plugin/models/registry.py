"""A timm-style model registry with Distiller's naming conventions.

Names are lowercase with a dataset suffix (``vgg7_bn_cifar``, ``resnet8x4_cifar100``); the dataset is inferred
from the name as Distiller does (``_cifar100``: CIFAR-100; ``_cifar``: CIFAR-10, and any other 32x32 dataset
whose classes are given). A network's number of classes comes from the dataset (``create_model(classes=...)``),
and its class names become part of it (``model.classes``), as its input normalization does. The original
experiment's type names (``Resnet18``, ``VGG7``, ``5-CNN``, ``avg``, ``jn``)
are accepted case-insensitively as aliases wherever a name is taken.
"""
import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..util.errors import KDPluginError
from ..util.normalization import DEFAULT, get_normalization, set_normalization

_entrypoints = {}
_aliases = {}
_default_cfgs = {}


def register_model(fn: Callable | None = None, *, aliases: Sequence[str] = (), normalization: str = DEFAULT.name,
                   input_size: Sequence[int] = (3, 32, 32)) -> Any:
    """Decorator: register a factory ``fn(**kwargs) -> nn.Module`` under its function name, with the input
    preprocessing its networks expect (a name from ``kd_plugin.util.normalization``) as its default config."""

    def wrap(factory):
        name = factory.__name__
        if name in _entrypoints:
            raise ValueError(f"model {name!r} registered twice")
        _entrypoints[name] = factory
        _default_cfgs[name] = {"normalization": get_normalization(normalization), "input_size": tuple(input_size)}
        for alias in aliases:
            _aliases[alias.lower()] = name
        return factory

    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str | None = None) -> list[str]:
    names = sorted(_entrypoints)
    return [n for n in names if pattern is None or pattern in n]


def default_cfg(arch: str) -> dict[str, Any]:
    """{normalization, input_size} a freshly created ``arch`` expects (timm's pretrained_cfg, in spirit)."""
    return dict(_default_cfgs[resolve_arch(arch)])


def list_aliases() -> dict[str, str]:
    return dict(_aliases)


def resolve_arch(arch: str) -> str:
    """Canonical registry name for ``arch`` (a registry name or an original alias), or KDPluginError."""
    if not isinstance(arch, str) or not arch:
        raise KDPluginError(f"model name must be a non-empty string, got {arch!r}")
    key = arch.strip()
    if key in _entrypoints:
        return key
    lowered = key.lower()
    if lowered in _entrypoints:
        return lowered
    if lowered in _aliases:
        return _aliases[lowered]
    known = list(_entrypoints) + list(_aliases)
    close = difflib.get_close_matches(lowered, known, n=4, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else f"; known: {', '.join(sorted(_entrypoints))}"
    raise KDPluginError(f"unknown model {arch!r}{hint}")


def is_model(arch: str) -> bool:
    try:
        resolve_arch(arch)
        return True
    except KDPluginError:
        return False


def dataset_of(arch: str) -> str:
    """Dataset implied by a canonical name, the way Distiller infers it."""
    name = resolve_arch(arch)
    if name.endswith("_cifar100"):
        return "cifar100"
    if "cifar" in name:
        return "cifar10"
    return "imagenet"


PLAIN_CONFIG_VALUES = (str, int, float, bool, type(None))


def check_model_config(config: object, where: str) -> dict:
    """CONFIG (factory arguments read from a file) when it maps names to plain values or lists of them; modules
    (``members``) can never come from a file."""
    def plain(value):
        return isinstance(value, PLAIN_CONFIG_VALUES) or (
            isinstance(value, (list, tuple)) and all(isinstance(x, PLAIN_CONFIG_VALUES) for x in value))

    if not isinstance(config, dict) or not all(isinstance(k, str) and k != "members" and plain(v)
                                               for k, v in config.items()):
        raise KDPluginError(f"{where} must map argument names to plain values")
    return config


def create_model(arch: str, dataset: str | None = None, pretrained: bool = False, weights: str | None = None,
                 normalization: Any = None, classes: Sequence[str] | None = None, **kwargs: Any) -> torch.nn.Module:
    """Build a registered network. Mirrors ``distiller.models.create_model`` (argument order aside).

    ``weights``: a ``.safetensors`` file (as ``kd-plugin export --format safetensors`` writes) loaded strictly.
    The input normalization is NORMALIZATION (a Normalization) if given, else the one the weights file records,
    else the registered default. CLASSES (the dataset's class names) set the number of outputs and become
    ``model.classes``; None keeps the factory's default (the implied dataset's) and leaves ``model.classes``
    None. DATASET, when given, is recorded as ``model.dataset`` (a 32x32 network trains on any 32x32 dataset);
    an ImageNet name is refused for CIFAR."""
    name = resolve_arch(arch)
    implied = dataset_of(name)
    if dataset is not None and (implied == "imagenet") != (dataset.lower() == "imagenet"):
        raise KDPluginError(f"model {name} is a {implied} network, not a {dataset} one")
    if pretrained:
        raise KDPluginError(
            f"no pretrained weights ship for {name}: train it, or load a checkpoint with --resume-from/--kd-resume"
        )
    factory = _entrypoints[name]
    if weights is not None and not kwargs:
        from .weights_file import recorded_config

        kwargs = dict(recorded_config(weights))
    fixed = classes is not None and "num_classes" not in inspect.signature(factory).parameters
    if classes is not None and not fixed:
        kwargs["num_classes"] = len(classes)
    try:
        model = factory(**kwargs)
    except TypeError as err:  # arguments from a checkpoint's model_config or a schedule that the factory lacks
        if not kwargs:
            raise
        raise KDPluginError(f"model {name}: {err}") from None
    if fixed:  # a network built for its own dataset's classes (the original's ensembles)
        outputs = _output_count(model)
        if outputs != len(classes):
            raise KDPluginError(f"model {name} has {outputs} outputs and cannot be built for {len(classes)} classes")
    model.arch = name
    model.dataset = dataset or implied
    model.classes = tuple(classes) if classes is not None else None
    recorded = None
    if weights is not None:
        from .weights_file import load_safetensors

        recorded = load_safetensors(model, weights)
    cfg = _default_cfgs[name]
    return set_normalization(model, normalization or recorded or cfg["normalization"], cfg["input_size"])


def _output_count(model):
    """The number of logits MODEL gives for one 32x32 image (its training mode kept)."""
    mode = model.training
    with torch.no_grad():
        outputs = model.eval()(torch.zeros(1, 3, 32, 32)).shape[-1]
    model.train(mode)
    return outputs
