"""Entry point of `python -m data_tools`."""

import sys

from data_tools.cli import main

sys.exit(main())
