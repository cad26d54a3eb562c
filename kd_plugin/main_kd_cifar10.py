"""``python -m kd_plugin.main_kd_cifar10`` as users type it; the command is in ``kd_plugin.cli``."""
import sys

from .cli.main_kd_cifar10 import main

if __name__ == "__main__":
    sys.exit(main())
