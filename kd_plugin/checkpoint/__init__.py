"""Distiller's checkpoint format, read safely (weights only, allow-listed optimizer class, CRCs, schema)."""

from .files import (
    Checkpoint,
    check_arch,
    check_classes,
    checkpoint_content,
    checkpoint_paths,
    load_checkpoint_file,
    load_model,
    load_weights,
    normalization_line,
    normalize_state_dict_keys,
    optimizer_class,
    read_checkpoint_file,
    save_checkpoint,
    verify_archive,
    write_checkpoint,
)

__all__ = [
    "check_arch",
    "check_classes",
    "Checkpoint",
    "checkpoint_content",
    "checkpoint_paths",
    "load_checkpoint_file",
    "load_model",
    "load_weights",
    "normalization_line",
    "normalize_state_dict_keys",
    "optimizer_class",
    "read_checkpoint_file",
    "save_checkpoint",
    "verify_archive",
    "write_checkpoint",
]
