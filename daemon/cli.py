"""The `rollguard` command line: `run`, `check`, `approve`, `get`, `replay` (and `sim`, `demo` where
`sim` is installed).

Exit codes: 0 success, 1 the command ran and found a problem (for example an invalid rule file),
2 usage error or a command that is not implemented yet.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from daemon import __version__
from daemon.settings import SettingsError, log_settings

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default=None,
                        help="log format (default auto: console on a TTY, JSON otherwise)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                        help="lowest level logged (default info)")


def _check(args: argparse.Namespace) -> int:
    from daemon.rules.check import check_paths

    code, lines = check_paths(args.paths)
    for line in lines:
        print(line, file=sys.stderr if code else sys.stdout)
    return EXIT_PROBLEM if code else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from daemon.daemon import run_command
    from daemon.logs import configure_logging
    from daemon.rulesets import RulesInvalid
    from daemon.settings import run_settings

    settings = run_settings(rules=args.rules, kubeconfig=args.kubeconfig, namespaces=args.namespaces,
                            dry_run=args.dry_run, http_listen=args.http_listen, log=args.log,
                            leader_election=args.leader_election, service_proxy=args.service_proxy,
                            prometheus_url=args.prometheus_url, notify_config=args.notify_config)
    configure_logging(settings.log)
    try:
        return run_command(settings)
    except RulesInvalid as exc:
        for error in exc.errors:
            print(f"rollguard run: {error}", file=sys.stderr)
        return EXIT_PROBLEM


def _approve(args: argparse.Namespace) -> int:
    """`rollguard approve` and `rollguard deny` (args.command says which)."""
    import asyncio
    import os
    from pathlib import Path

    from daemon.approve import ApproveError, approve, deny

    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    answer = approve if args.command == "approve" else deny
    try:
        print(asyncio.run(answer(args.target, kubeconfig=Path(kubeconfig), revision=args.revision, by=args.by)))
    except ApproveError as exc:
        print(f"rollguard {args.command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK


def _approve_target(value: str) -> str:
    from daemon.approve import ApproveError, parse_target

    try:
        parse_target(value)
    except ApproveError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _revision_number(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a revision number")
    return int(value)


def _approver_name(value: str) -> str:
    from daemon.approval import clean_approver

    if clean_approver(value) is None:
        raise argparse.ArgumentTypeError("the approver's name is empty")
    return value


def _add_approve_commands(sub: Any) -> None:
    helps = {"approve": "approve the rollback a review asked for",
             "deny": "close a review without rolling back"}
    for command, help_ in helps.items():
        parser = sub.add_parser(command, help=help_)
        parser.add_argument("target", metavar="NAMESPACE/DEPLOYMENT", type=_approve_target)
        parser.add_argument("--revision", metavar="N", type=_revision_number,
                            help="the revision you reviewed (refused if the review is for another one)")
        parser.add_argument("--by", metavar="NAME", type=_approver_name,
                            help="who answers (default: the kubeconfig's current user, else $USER); "
                                 "self-declared, Kubernetes does not record it")
        parser.add_argument("--kubeconfig", metavar="PATH",
                            help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
        parser.set_defaults(handler=_approve)


def _add_plugin_commands(sub: Any, add_log_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Commands that live outside the daemon (`rollguard sim`, `rollguard demo` from the `sim` package).

    They are found through the `rollguard.commands` entry points, so the daemon never imports the
    stand-ins: in the image, which ships `daemon/` only, the commands are simply absent.
    """
    for entry in sorted(entry_points(group="rollguard.commands"), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError:
            continue  # that wing is not installed here (the daemon image)
        register(sub, add_log_flags)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="rollguard",
        description="Watch Deployment rollouts, judge them by rule files, roll back the bad ones.",
    )
    parser.add_argument("--version", action="version", version=f"rollguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run the daemon against a cluster")
    run.add_argument("--rules", metavar="DIR", help="directory of rule files (env ROLLGUARD_RULES)")
    run.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig (default: in-cluster config)")
    run.add_argument("--namespace", "-n", dest="namespaces", action="append", default=[], metavar="NS",
                     help="namespace to watch (repeatable; default: all)")
    run.add_argument("--dry-run", action="store_true", help="decide and notify, but write nothing")
    run.add_argument("--http-listen", metavar="HOST:PORT", help="health/metrics address (default 0.0.0.0:8080)")
    run.add_argument("--prometheus-url", metavar="URL",
                     help="Prometheus HTTP API base URL (env ROLLGUARD_PROMETHEUS_URL)")
    run.add_argument("--notify-config", metavar="PATH",
                     help="notifier configuration file (env ROLLGUARD_NOTIFY_CONFIG)")
    run.add_argument("--leader-election", action="store_true", help="elect a leader on a Lease; only it acts")
    run.add_argument("--service-proxy", metavar="URL",
                     help="HTTP proxy for in-cluster check URLs when running outside the cluster")
    _add_log_flags(run)
    run.set_defaults(handler=_run)

    check = sub.add_parser("check", help="validate rule files and exit")
    check.add_argument("paths", nargs="*", metavar="PATH", help="rule files or directories")
    check.set_defaults(handler=_check)
    from daemon.notifytest import add_notify_commands  # `notify test`, `check --notify-config`; imports lazily

    add_notify_commands(sub, check)

    _add_approve_commands(sub)
    from daemon.get import add_get_command  # `rollguard get`: the analyses at a glance

    add_get_command(sub)

    from daemon.replay.command import add_replay_command  # `rollguard replay`: rules judged on past rollouts

    add_replay_command(sub)

    from daemon.gitops.cli import add_resume_command

    add_resume_command(sub)

    _add_plugin_commands(sub, _add_log_flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        if hasattr(args, "log_format"):
            args.log = log_settings(fmt=args.log_format, level=args.log_level)
        return handler(args)
    except SettingsError as exc:
        print(f"rollguard {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
