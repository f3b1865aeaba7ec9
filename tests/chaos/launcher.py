"""Run `rollguard` with a deliberately broken variant patched in: how the checker is shown to catch bugs.

    python -m tests.chaos.launcher --variant no-fencing -- run --rules DIR --kubeconfig ...

Each variant monkeypatches `daemon` functions in this process only, then hands the remaining
arguments to the daemon's own CLI entry point (`daemon.cli.main`). `none` patches nothing: the chaos
runs start every daemon through here so a variant run differs from a clean one only by its patch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _swap(namespace: Any, name: str, new: Any) -> Any:
    """Replace `name` in a module or class namespace (where the daemon looks it up); returns the old one."""
    old = vars(namespace)[name]
    if isinstance(namespace, type):
        setattr(namespace, name, new)
    else:
        vars(namespace)[name] = new
    return old


def _no_fencing() -> None:
    """Undo without re-checking the analysed revision, and without the patch's preconditions (`test`)."""
    import daemon.actions
    import daemon.writer
    from daemon.kube import client as kube_client

    original_undo: Any = None

    async def unfenced_undo(*args: Any, **kwargs: Any) -> Any:
        kwargs["fence"] = None
        return await original_undo(*args, **kwargs)

    original_patch: Any = None

    async def patch_without_test(self: Any, path: str, body: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(body, list):
            body = [op for op in body if not (isinstance(op, dict) and op.get("op") == "test")]
        return await original_patch(self, path, body, *args, **kwargs)

    original_undo = _swap(daemon.writer, "undo", unfenced_undo)
    _swap(daemon.actions, "check_fence", lambda *args, **kwargs: None)
    original_patch = _swap(kube_client.KubeClient, "patch", patch_without_test)


def _job_twice() -> None:
    """Create the pre-rollback Job twice (as a retry that forgets the first run would)."""
    import daemon.writer

    original: Any = None

    async def twice(client: Any, namespace: str, manifest: Any) -> Any:
        await original(client, namespace, manifest)
        again = {**manifest, "metadata": {**manifest["metadata"], "name": manifest["metadata"]["name"] + "-again"}}
        await original(client, namespace, again)
        return manifest["metadata"]["name"]

    original = _swap(daemon.writer, "ensure_job", twice)


def _no_notify_retry() -> None:
    """Give up on a notification at the first 429/5xx instead of retrying it."""
    from daemon.notify.model import SendResult

    def give_up(cls: type[SendResult], error: str, *, retry_after: float | None = None) -> SendResult:
        return cls(ok=False, retry=False, error=error)

    _swap(SendResult, "retry_later", classmethod(give_up))


def _dry_run_ignored(argv: list[str]) -> list[str]:
    """Drop `--dry-run`: the daemon writes as if it were live."""
    os.environ.pop("ROLLGUARD_DRY_RUN", None)
    return [a for a in argv if a != "--dry-run"]


def _secret_in_events() -> None:
    """Quote the Slack token in every Event written (a debugging line left in, past the scrubbing)."""
    from daemon.kube import client as kube_client

    original: Any = None
    token = os.environ.get("ROLLGUARD_SLACK_TOKEN", "")

    async def leaky(self: Any, path: str, body: Any, *args: Any, **kwargs: Any) -> Any:
        if "/events" in path and isinstance(body, dict) and "message" in body:
            body = {**body, "message": f"{body['message']} (auth: Bearer {token})"}
        return await original(self, path, body, *args, **kwargs)

    original = _swap(kube_client.KubeClient, "create", leaky)


def _no_outbox() -> None:
    """A successor never sends what its predecessor still owed (the outbox is written, never read)."""
    from daemon.outbox import Outbox

    def forget(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    _swap(Outbox, "resend", forget)


PATCHES: dict[str, Callable[[], None]] = {
    "none": lambda: None,
    "no-fencing": _no_fencing,
    "job-twice": _job_twice,
    "no-notify-retry": _no_notify_retry,
    "dry-run-ignored": lambda: None,  # an argument rewrite, below
    "secret-in-events": _secret_in_events,
    "no-outbox": _no_outbox,
}
VARIANTS = tuple(PATCHES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.launcher")
    parser.add_argument("--variant", choices=VARIANTS, default="none")
    parser.add_argument("rollguard_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = list(args.rollguard_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    PATCHES[args.variant]()
    if args.variant == "dry-run-ignored":
        rest = _dry_run_ignored(rest)
    from daemon.cli import main as rollguard_main

    return rollguard_main(rest)


if __name__ == "__main__":
    sys.exit(main())
