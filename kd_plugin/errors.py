"""User-facing errors and the one-line-on-stderr contract of every entry point."""
import functools
import sys


class KDPluginError(Exception):
    """A problem with the user's input (file, flag, data). Printed as one line, never a traceback."""

    exit_code = 2
    label = "error"


class TrainingInterrupted(KDPluginError):
    """Raised after a signal once a resumable checkpoint is safely on disk."""

    label = "interrupted"

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(KDPluginError):
    exit_code = 3


def one_line(text):
    return " ".join(str(text).split())


# Console-script names of the entry-point modules (as users type them).
PROGRAM_NAMES = {"kd_plugin.cli": "kd-plugin", "kd_plugin.__main__": "kd-plugin",
                 "kd_plugin.compress_classifier": "compress_classifier", "kd_plugin.main_kd_cifar10": "main_KD_CIFAR10"}


def program_name(module_name):
    """The command a user typed, also under ``python -m`` (where the module is called ``__main__``)."""
    spec = getattr(sys.modules.get(module_name), "__spec__", None)
    name = spec.name if spec is not None else module_name
    return PROGRAM_NAMES.get(name, name.rsplit(".", 1)[-1])


def cli_entry(main):
    """Wrap a console entry point: KDPluginError -> 'prog: error: ...' on stderr and its exit code."""

    @functools.wraps(main)
    def wrapper(argv=None):
        prog = program_name(main.__module__)
        try:
            return main(argv)
        except KDPluginError as err:
            print(f"{prog}: {err.label}: {one_line(err)}", file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 1

    return wrapper
