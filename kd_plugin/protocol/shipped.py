"""The schedules that ship with kd-plugin: one YAML file per experiment of the original.

They live in the repository's top-level ``schedules/`` and are installed as package data ``kd_plugin/schedules``
(setup.py maps one onto the other). An installed wheel reads them with importlib.resources; a source checkout
(or an editable install, whose package folder has no ``schedules/``) reads the repository's folder.
"""
import glob
import os
from importlib import resources

from ..util.errors import KDPluginError

PACKAGE_DATA = "schedules"


def shipped_schedules_dir():
    """The folder holding the shipped ``*.yaml`` schedules, or None when neither location has it."""
    packaged = resources.files("kd_plugin") / PACKAGE_DATA
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            PACKAGE_DATA)
    for candidate in (str(packaged), checkout):
        if os.path.isdir(candidate) and glob.glob(os.path.join(candidate, "*.yaml")):
            return candidate
    return None


def shipped_schedule_names():
    folder = shipped_schedules_dir()
    return sorted(os.path.basename(p)[:-len(".yaml")] for p in glob.glob(os.path.join(folder or "", "*.yaml")))


def resolve_schedule(name_or_path):
    """An existing file as given; otherwise a shipped schedule's path by name (with or without .yaml, with or
    without a leading ``schedules/``); otherwise the path as given, for the reader's own 'not found' error."""
    if not name_or_path or os.path.exists(name_or_path):
        return name_or_path
    stem = os.path.basename(name_or_path)
    stem = stem[:-len(".yaml")] if stem.endswith(".yaml") else stem
    folder = shipped_schedules_dir()
    if folder and os.path.dirname(name_or_path) in ("", PACKAGE_DATA):
        candidate = os.path.join(folder, f"{stem}.yaml")
        if os.path.isfile(candidate):
            return candidate
    return name_or_path


def require_schedules_dir(override=None):
    """``--schedules DIR`` when given, else the shipped folder; a one-line error when it is missing."""
    folder = override or shipped_schedules_dir()
    if not folder or not os.path.isdir(folder):
        raise KDPluginError(f"{override or 'kd_plugin/schedules'}: the schedules folder is missing "
                            f"(pass --schedules DIR, or reinstall kd-plugin)")
    return os.path.abspath(folder)
