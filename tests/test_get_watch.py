"""End to end: `rollguard get --watch`, driven through a pseudo-terminal as an SRE runs it.

Revision 2 answers 12% of requests with 5xx. On the terminal, the `error-rate-over-5pct` rule of
the (test-sized) example policy counts up to its `for: 3s` — `pending 1s of 3s`, `pending 2s of 3s`,
in yellow — and then the screen shows the rollback with the rule that fired. Without the daemon,
`rollguard get` falls back to the state annotation and rollguard's Events.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import sys
from pathlib import Path

import pytest

from sim.demo.stack import running_stack
from tests.e2ekit import RULES, deploy, eventually, image_of, revision_of, serving_v1, state_of

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

CLEAR = "\x1b[H\x1b[2J"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PENDING = re.compile(r"^\s+error-rate-over-5pct\s+rollback\s+pending (\d+)s of 3s$", re.MULTILINE)


class Terminal:
    """A process on a pseudo-terminal; `frames` are the screens it drew (split at each clear-screen)."""

    def __init__(self) -> None:
        self.raw = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._master = -1

    async def start(self, *args: str) -> None:
        self._master, slave = pty.openpty()
        binary = Path(sys.executable).parent / "rollguard"
        self.proc = await asyncio.create_subprocess_exec(str(binary), *args, stdin=slave, stdout=slave, stderr=slave,
                                                         env={**os.environ, "TERM": "xterm"})
        os.close(slave)
        asyncio.get_running_loop().add_reader(self._master, self._read)

    def _read(self) -> None:
        try:
            self.raw += os.read(self._master, 65536).decode(errors="replace")
        except OSError:  # the process ended (EIO on the master)
            asyncio.get_running_loop().remove_reader(self._master)

    @property
    def frames(self) -> list[str]:
        return [ANSI.sub("", f).replace("\r\n", "\n") for f in self.raw.split(CLEAR)[1:]]

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        os.close(self._master)


async def test_get_watch_shows_the_rule_counting_up_to_its_for_and_then_the_rollback(tmp_path: Path) -> None:
    async with running_stack(workdir=tmp_path, rules_dir=RULES) as stack:
        await serving_v1(stack)
        terminal = Terminal()
        await terminal.start("get", "staging/backend", "--watch", "--interval", "0.3",
                             "--server", stack.daemon_url, "--kubeconfig", str(stack.cluster.kubeconfig))
        try:
            await deploy(stack, "backend:v2", SIM_ERROR_RATIO="0.12")
            await eventually(lambda: revision_of(stack) == 2, timeout=30, what="revision 2 to start", stack=stack)

            def counted() -> list[int]:
                seen = [int(m) for f in terminal.frames if "revision 2" in f for m in PENDING.findall(f)]
                return sorted(set(seen))

            await eventually(lambda: {1, 2} <= set(counted()), timeout=60, stack=stack,
                             what="the screen to count the rule up to its for")
            pending_frame = next(f for f in terminal.frames if "pending 2s of 3s" in f)
            assert re.search(r"^\s+error_rate\s+0\.1\d*\s+> 0\.05\s+—\s+\S+", pending_frame, re.MULTILINE), \
                pending_frame
            assert "\x1b[33mpending" in terminal.raw, "a pending rule is drawn in yellow on a terminal"

            def rolled_back_frame() -> str | None:
                return next((f for f in reversed(terminal.frames)
                             if re.search(r"staging/backend  revision 2  (rolling-back|rolled-back)", f)), None)

            await eventually(lambda: rolled_back_frame() is not None, timeout=60, stack=stack,
                             what="the screen to show the rollback")
            frame = rolled_back_frame() or ""
            assert re.search(r"^\s+error-rate-over-5pct\s+rollback\s+fired$", frame, re.MULTILINE), frame
            assert re.search(r"^  verdict    rollback\w* — .*error-rate-over-5pct", frame, re.MULTILINE), frame
            assert "image      backend:v1 → backend:v2" in frame, frame
        finally:
            await terminal.stop()
        await eventually(lambda: image_of(stack) == "backend:v1", timeout=60, what="the rollback", stack=stack)
        await eventually(lambda: state_of(stack).get("phase") == "rolled-back", timeout=30, stack=stack,
                         what="the rollback to complete")

        # The daemon away: the state annotation and the Events still tell what happened.
        await stack.stop_daemon()
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "rollguard"), "get", "staging/backend", "--server",
            stack.daemon_url, "--kubeconfig", str(stack.cluster.kubeconfig),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        text = out.decode()
        assert proc.returncode == 0, err.decode()
        assert text.startswith("(the cluster's state annotations (daemon unreachable: "), text
        assert "staging/backend  revision 2  rolled-back  (from the state annotation" in text, text
        assert "  image      —\n" in text, "revision 2 is no longer the Deployment's template"
        assert "Events (rollguard):" in text, text
        assert "RolledBack: Rolled back staging/backend" in text, text
