import sys

from .cli.kd_plugin import main

sys.exit(main())
