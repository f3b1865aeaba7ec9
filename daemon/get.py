"""`rollguard get [NS/NAME] [--watch] [-o json|wide]`: the analyses at a glance, in a terminal.

Where it reads (the first that answers):

1. `--server URL`: the daemon's `/api/v2/analyses` (bearer token from `ROLLGUARD_API_TOKEN`, if set);
2. otherwise the same path through the Kubernetes API server's service proxy, with the user's
   kubeconfig (`--service NS/NAME:PORT`, default `rollguard/rollguard:http-metrics`): no
   `kubectl port-forward` needed;
3. when the daemon is unreachable: the Deployments' state annotations and rollguard's Events, read
   with the kubeconfig (no readings, no timers: the annotation holds the stage and the decision).

`--watch` redraws every `--interval` seconds (the screen is cleared on a terminal; otherwise each
refresh is printed after a separator line). Colours only when the output is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from daemon.kube.client import KubeClient, KubeError, api_path
from daemon.kube.state import StateError, read_state
from daemon.view.render import render
from daemon.view.schema import analysis_list, annotation_item

DEFAULT_SERVICE = "rollguard/rollguard:http-metrics"
CLEAR = "\x1b[H\x1b[2J"
MAX_EVENTS = 8
"""rollguard Events shown for one Deployment when falling back to the cluster."""


class Unreachable(Exception):
    """The daemon's API did not answer (the message says where and why)."""


def parse_target(value: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` → (namespace, name); argparse.ArgumentTypeError otherwise."""
    namespace, slash, name = value.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAMESPACE/DEPLOYMENT")
    return namespace, name


def _service_path(service: str) -> str:
    namespace, _, rest = service.partition("/")
    name, _, port = rest.partition(":")
    return f"/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy/api/v2/analyses"


async def from_server(url: str, *, token: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """The document from the daemon at `url`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url.rstrip("/") + "/api/v2/analyses", headers=headers) as response:
            if response.status != 200:
                raise Unreachable(f"{url} answered {response.status}")
            document: dict[str, Any] = await response.json()
            return document
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise Unreachable(f"{url}: {type(exc).__name__}: {exc}") from None


async def from_cluster(kube: KubeClient, *, service: str | None,
                       target: tuple[str, str] | None) -> tuple[dict[str, Any], list[str], str]:
    """The document through the service proxy; else from the annotations, with Events. Returns
    (document, event lines, where it came from)."""
    if service:
        try:
            document = await kube.get(_service_path(service))
            return document, [], f"the daemon, through the API server's service proxy: {service}"
        except KubeError as exc:
            why = str(exc)
    else:
        why = "no service given"
    namespace = target[0] if target else None
    listed = await kube.list(api_path("apps/v1", "deployments", namespace))
    now = time.time()
    items = []
    for deployment in listed.get("items") or []:
        meta = deployment.get("metadata") or {}
        if target is not None and meta.get("name") != target[1]:
            continue
        try:
            item = annotation_item(deployment, read_state(deployment, now=now))
        except StateError:
            continue
        if item is not None:
            items.append(item)
    events: list[str] = []
    if target is not None:
        found = await kube.list(api_path("v1", "events", target[0]),
                                {"fieldSelector": f"involvedObject.name={target[1]},involvedObject.kind=Deployment"})
        ours = [e for e in found.get("items") or [] if (e.get("source") or {}).get("component") == "rollguard"
                or e.get("reportingComponent") == "rollguard"]
        ours.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        events = [f"{e.get('lastTimestamp') or e.get('eventTime') or ''}  {e.get('reason')}: {e.get('message')}"
                  for e in ours[-MAX_EVENTS:]]
    return analysis_list(items, now=now), events, f"the cluster's state annotations (daemon unreachable: {why})"


async def fetch(args: argparse.Namespace, kube: KubeClient | None) -> tuple[dict[str, Any], list[str], str | None]:
    """One reading; the third value says where it came from unless it is the `--server` the user named."""
    if args.server:
        try:
            return await from_server(args.server, token=os.environ.get("ROLLGUARD_API_TOKEN")), [], None
        except Unreachable as exc:
            if kube is None:
                raise
            document, events, where = await from_cluster(kube, service=None, target=args.target)
            return document, events, f"{where.split(' (')[0]} (daemon unreachable: {exc})"
    assert kube is not None
    # Said on the first line either way: the daemon's live view, or the annotations' (no readings, no timers).
    return await from_cluster(kube, service=args.service, target=args.target)


def show(document: Mapping[str, Any], events: list[str], note: str | None, args: argparse.Namespace,
         out: TextIO) -> None:
    if args.output == "json":
        items = [i for i in document.get("items") or []
                 if args.target is None or (i.get("namespace"), i.get("deployment")) == args.target]
        out.write(json.dumps({**document, "items": items}, indent=1) + "\n")
        return
    text = render(document, colour=out.isatty(), wide=args.output == "wide", target=args.target, events=events)
    out.write((f"({note})\n" if note else "") + text)


async def run_get(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    usable = os.path.exists(kubeconfig)  # noqa: ASYNC240 — once, before anything runs concurrently
    kube = await KubeClient.connect(Path(kubeconfig)) if usable else None
    if kube is None and not args.server:
        print(f"rollguard get: no kubeconfig at {kubeconfig} and no --server", file=sys.stderr)
        return 1
    try:
        while True:
            try:
                document, events, note = await fetch(args, kube)
            except (Unreachable, KubeError) as exc:
                if not args.watch:
                    print(f"rollguard get: {exc}", file=sys.stderr)
                    return 1
                document, events, note = analysis_list([], now=time.time()), [], f"unreachable: {exc}"
            if args.watch and out.isatty():
                out.write(CLEAR)
            elif args.watch:
                out.write(f"--- {time.strftime('%H:%M:%S')}\n")
            show(document, events, note, args, out)
            out.flush()
            if not args.watch:
                return 0
            await asyncio.sleep(args.interval)
    finally:
        if kube is not None:
            await kube.close()


def add_get_command(sub: Any) -> None:
    parser = sub.add_parser("get", help="show analyses: signals, rule timers, verdicts (--watch to follow)")
    parser.add_argument("target", nargs="?", metavar="NAMESPACE/DEPLOYMENT", type=parse_target)
    parser.add_argument("--watch", "-w", action="store_true", help="redraw until interrupted")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="--watch refresh (default 1)")
    parser.add_argument("-o", "--output", choices=("text", "json", "wide"), default="text",
                        help="json: the /api/v2/analyses document; wide: with conditions and messages")
    parser.add_argument("--server", metavar="URL", help="the daemon's HTTP address (e.g. after a port-forward)")
    parser.add_argument("--service", metavar="NS/NAME:PORT", default=DEFAULT_SERVICE,
                        help=f"the daemon's Service, reached through the API server (default {DEFAULT_SERVICE})")
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    parser.set_defaults(handler=lambda args: _main(args))


def _main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_get(args))
    except KeyboardInterrupt:
        return 0
