"""A timm-style model registry with Distiller's naming conventions.

Names are lowercase with a dataset suffix (``vgg7_bn_cifar``); the dataset is inferred from the name as
Distiller does. The original experiment's type names (``Resnet18``, ``VGG7``, ``5-CNN``, ``avg``, ``jn``)
are accepted case-insensitively as aliases wherever a name is taken.
"""
import difflib

from ..util.errors import KDPluginError
from ..util.normalization import DEFAULT, get_normalization, set_normalization

_entrypoints = {}
_aliases = {}
_default_cfgs = {}


def register_model(fn=None, *, aliases=(), normalization=DEFAULT.name, input_size=(3, 32, 32)):
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


def list_models(pattern=None):
    names = sorted(_entrypoints)
    return [n for n in names if pattern is None or pattern in n]


def default_cfg(arch):
    """{normalization, input_size} a freshly created ``arch`` expects (timm's pretrained_cfg, in spirit)."""
    return dict(_default_cfgs[resolve_arch(arch)])


def list_aliases():
    return dict(_aliases)


def resolve_arch(arch):
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


def is_model(arch):
    try:
        resolve_arch(arch)
        return True
    except KDPluginError:
        return False


def dataset_of(arch):
    """Dataset implied by a canonical name, the way Distiller infers it."""
    name = resolve_arch(arch)
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


def create_model(arch, dataset="cifar10", pretrained=False, weights=None, normalization=None, **kwargs):
    """Build a registered network. Mirrors ``distiller.models.create_model`` (argument order aside).

    ``weights``: a ``.safetensors`` file (as ``kd-plugin export --format safetensors`` writes) loaded strictly.
    The input normalization is NORMALIZATION (a Normalization) if given, else the one the weights file records,
    else the registered default."""
    name = resolve_arch(arch)
    implied = dataset_of(name)
    if dataset is not None and dataset.lower() != implied:
        raise KDPluginError(f"model {name} is a {implied} network, not a {dataset} one")
    if pretrained:
        raise KDPluginError(
            f"no pretrained weights ship for {name}: train it, or load a checkpoint with --resume-from/--kd-resume"
        )
    if weights is not None and not kwargs:
        from .weights_file import recorded_config

        kwargs = recorded_config(weights)
    try:
        model = _entrypoints[name](**kwargs)
    except TypeError as err:  # arguments from a checkpoint's model_config or a schedule that the factory lacks
        if not kwargs:
            raise
        raise KDPluginError(f"model {name}: {err}") from None
    model.arch = name
    model.dataset = implied
    recorded = None
    if weights is not None:
        from .weights_file import load_safetensors

        recorded = load_safetensors(model, weights)
    cfg = _default_cfgs[name]
    return set_normalization(model, normalization or recorded or cfg["normalization"], cfg["input_size"])
