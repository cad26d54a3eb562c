"""The names of run directories (``{out}/{name}___{stamp}``)."""
import os

from .errors import KDPluginError


def check_run_name(name):
    """Refuse a run name that is not a plain name: a run's files never leave its run directory under -o."""
    if not isinstance(name, str) or not name.strip():
        raise KDPluginError(f"-n/--name must be a non-empty name, got {name!r}")
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if os.path.isabs(name) or any(sep in name for sep in separators) or ".." in name or "\0" in name:
        raise KDPluginError(f"-n/--name must be a name, not a path: {name!r} (the run directory is created under -o)")
    return name
