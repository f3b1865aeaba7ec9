"""`python -m daemon` is the same as the `rollguard` console script."""

import sys

from daemon.cli import main

sys.exit(main())
