"""`python -m tests.chaos`: run seeded fault schedules against rollguard and check the invariants.

    python -m tests.chaos --seed 1234            # one schedule, printed, then checked
    python -m tests.chaos --seeds 200 --jobs 2   # seeds 1..200, two side by side, then the table
    python -m tests.chaos --kill-points          # SIGKILL the daemon at every write of one rollback
    python -m tests.chaos --seed 7 --variant no-fencing   # a deliberately broken daemon

Exit status 1 when any invariant was violated.
"""

from __future__ import annotations

import sys

from tests.chaos.report import main

if __name__ == "__main__":
    sys.exit(main())
