"""``python -m kd_plugin.compress_classifier`` as users type it; the command is in ``kd_plugin.cli``."""
import sys

from .cli.compress_classifier import main

if __name__ == "__main__":
    sys.exit(main())
