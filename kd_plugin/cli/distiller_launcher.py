"""Run one of IntelLabs Distiller's own scripts with kd-plugin loaded.

    python -m kd_plugin.distiller_launcher DISTILLER/examples/classifier_compression/compress_classifier.py ARGS...

registers kd-plugin with Distiller (every kd-plugin network becomes a valid --arch and --kd-teacher, and
kd-plugin's YAML extensions a valid ``class:`` in a --compress schedule), applies the fixes listed in
``kd_plugin.bridge.patches`` for the duration of the run only, then runs SCRIPT with ARGS exactly as
``python SCRIPT ARGS`` would (SCRIPT's folder first on sys.path, so its sibling modules import).
Example: ... compress_classifier.py DATA --arch vgg7_bn_cifar --kd-teacher resnet18_cifar
--kd-resume TEACHER.pth.tar --kd-temp 1.5 --epochs 1
"""
import os
import runpy
import sys

from ..bridge import import_distiller, register_with_distiller
from ..util.errors import KDPluginError
from .args import cli_entry

USAGE = "usage: python -m kd_plugin.distiller_launcher SCRIPT [ARGS...]"


def run_script(script, args):
    """Run SCRIPT as __main__ with sys.argv = [SCRIPT, *ARGS]; sys.argv and sys.path are restored after."""
    script = os.path.abspath(script)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


@cli_entry("distiller_launcher")
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__ if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    script, args = argv[0], argv[1:]
    if not os.path.isfile(script):
        raise KDPluginError(f"{script}: no such script (give the path of Distiller's compress_classifier.py)")
    import_distiller()
    registration = register_with_distiller()
    from ..bridge.patches import distiller_runtime_patches

    with distiller_runtime_patches(args) as fixes:
        print(f"kd-plugin: {len(registration.models)} models and {', '.join(registration.extensions)} registered "
              f"with Distiller; runtime fixes: {', '.join(fixes)}", file=sys.stderr)
        run_script(script, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
