"""The daemon starts without importing kubernetes_asyncio's generated models (~40 MiB of RSS per replica)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import daemon.daemon
print(sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models")
             or m.startswith("kubernetes_asyncio.client.api.")))
from kubernetes_asyncio import client
from kubernetes_asyncio.client.models import V1Pod
print(client.V1Pod is V1Pod, client.CoreV1Api.__name__, client.Configuration.__name__)
"""


def test_the_daemon_loads_no_generated_model_and_others_still_get_the_whole_client() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True CoreV1Api Configuration"], result.stdout


_PAGERDUTY_PROBE = """
import sys
import daemon.daemon
from daemon.notify.pagerduty import PagerDutyNotifier
from daemon.notify.secrets import Redactor
print("pagerduty" in sys.modules)
PagerDutyNotifier(routing_key="R" * 32, redactor=Redactor())
print("pagerduty" in sys.modules)
"""


def test_the_pagerduty_library_is_loaded_only_when_a_pagerduty_target_is_built() -> None:
    result = subprocess.run([sys.executable, "-c", _PAGERDUTY_PROBE], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["False", "True"], result.stdout
