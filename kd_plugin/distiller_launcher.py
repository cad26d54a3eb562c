"""``python -m kd_plugin.distiller_launcher`` as users type it; the command is in ``kd_plugin.cli``."""
import sys

from .cli.distiller_launcher import main

if __name__ == "__main__":
    sys.exit(main())
