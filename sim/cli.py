"""`rollguard sim` and `rollguard demo`: the stand-ins' own commands, registered through the
`rollguard.commands` entry point so the daemon's command line never imports them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _sim(args: argparse.Namespace) -> int:
    from daemon.logs import configure_logging
    from sim.cluster import sim_command
    from sim.settings import sim_settings

    settings = sim_settings(listen=args.listen, kubeconfig_out=args.kubeconfig_out,
                            with_prometheus=args.with_prometheus, speed=args.speed, log=args.log)
    configure_logging(settings.log)
    return sim_command(settings)


def _demo(args: argparse.Namespace) -> int:
    from sim.demo.run import demo_command

    return demo_command(fast=args.fast, keep_running=args.keep_running)


def register(sub: Any, add_log_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `sim` and `demo` to the `rollguard` sub-parsers."""
    sim = sub.add_parser("sim", help="serve the simulated cluster until interrupted")
    sim.add_argument("--listen", metavar="HOST:PORT", help="API server address (default 127.0.0.1:0)")
    sim.add_argument("--kubeconfig-out", metavar="PATH", help="write a kubeconfig for the simulated cluster")
    sim.add_argument("--with-prometheus", action="store_true",
                     help="also start a real Prometheus scraping the simulated pods")
    sim.add_argument("--speed", type=float, default=None, help="simulated seconds per real second (default 1)")
    add_log_flags(sim)
    sim.set_defaults(handler=_sim)

    demo = sub.add_parser("demo", help="play the scripted story on the simulated cluster")
    demo.add_argument("--fast", action="store_true", help="short intervals (for tests)")
    demo.add_argument("--keep-running", action="store_true", help="leave the cluster and daemon up at the end")
    demo.set_defaults(handler=_demo)
