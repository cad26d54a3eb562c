"""The one-line-error contract of every command: a bad flag or a KDPluginError prints one line and exits 2."""
import argparse
import functools
import sys

from ..util.errors import KDPluginError, one_line


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def str2bool_yn(value):
    lowered = str(value).lower()
    if lowered in ("y", "yes", "on", "true", "1"):
        return "y"
    if lowered in ("n", "no", "off", "false", "0"):
        return "n"
    raise argparse.ArgumentTypeError(f"expected y or n, got {value!r}")


def cli_entry(prog):
    """Wrap a console entry point of command PROG: KDPluginError -> 'PROG: error: ...' on stderr and its exit code.

    Called with argv (from Python: tests, another tool) the wrapper returns the exit code. Called without (a
    console script or ``python -m``: the process is this command) it ends the process itself, so that a
    distributed rank exits with its own code (engine.distributed.exit_process)."""

    def wrap(main):
        def exit_code(argv):
            try:
                return main(argv)
            except KDPluginError as err:
                for line in getattr(err, "lines", None) or [err]:  # FieldErrors: a line per bad field
                    print(f"{prog}: {err.label}: {one_line(line)}", file=sys.stderr)
                return err.exit_code
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except BrokenPipeError:
                return 1

        @functools.wraps(main)
        def wrapper(argv=None):
            code = exit_code(argv)
            if argv is None:
                from ..engine.distributed import exit_process

                exit_process(code)
            return code

        return wrapper

    return wrap
