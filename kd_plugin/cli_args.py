"""argparse that keeps the one-line-error contract: a bad flag prints one line and exits 2."""
import argparse
import sys


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
