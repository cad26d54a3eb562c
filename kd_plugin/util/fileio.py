"""Atomic file writes: temp file in the same directory, flush, fsync, rename, fsync the directory."""
import contextlib
import json
import os
import tempfile

from .errors import KDPluginError


def _fsync_dir(directory):
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write, mode="wb"):
    """Call ``write(fh)`` on a temp file and move it over ``path`` only once it is completely on disk.

    The file gets the permissions ``open()`` would give a new file (0666 less the umask): mkstemp's temp
    file is 0600, which would make every checkpoint, summary and export private whatever the umask says.

    On any failure (disk full included: torch reports it as RuntimeError) the temp file is removed, the
    previous ``path`` is left as it was, and a KDPluginError names the file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise KDPluginError(f"{path}: cannot write ({err.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KDPluginError(f"{path}: could not save ({err}); the previous file is unchanged") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return path


def write_text(path, text):
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def require_file(path: str, what: str) -> str:
    """PATH if it is a file; else one line saying WHAT was expected and what is there instead."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        raise KDPluginError(f"{path}: is a directory, not a {what}")
    if os.path.exists(path):
        raise KDPluginError(f"{path}: is not a regular file (a {what} was expected)")
    raise KDPluginError(f"{path}: {what} not found")


def ensure_writable_dir(path):
    """Create ``path`` if needed and prove a file can be written there, before any long work starts."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise KDPluginError(f"output directory {path} is not writable ({err.strerror})") from None
    return path


def read_json_record(path, what, advice):
    """A JSON object (dict) this project wrote (a done marker, a state file). A truncated or malformed one is
    one line naming the file, WHAT it is and ADVICE; it is never silently treated as absent, since the
    caller could then redo or delete work that was already saved."""
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except OSError as err:
        raise KDPluginError(f"{path}: cannot read {what} ({err.strerror})") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise KDPluginError(f"{path}: {what} is truncated or malformed ({err}); {advice}") from None
    if not isinstance(record, dict):
        raise KDPluginError(f"{path}: {what} must be a JSON object, found {type(record).__name__}; {advice}")
    return record
