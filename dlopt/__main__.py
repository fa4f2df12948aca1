"""`python -m dlopt` is the `dlopt` command."""

import sys

from dlopt.cli import main

sys.exit(main())
