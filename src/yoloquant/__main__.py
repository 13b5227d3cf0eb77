"""``python -m yoloquant``: the command line."""

import sys

from yoloquant.cli import main

sys.exit(main())
