"""The `rollguard resume` sub-command (argument parsing and exit codes; the work is `daemon.gitops.resume`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _resume(args: argparse.Namespace) -> int:
    import asyncio
    import os
    from pathlib import Path

    from daemon.gitops.resume import ResumeError, resume

    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    try:
        argocd_namespace = args.argocd_namespace or os.environ.get("ROLLGUARD_ARGOCD_NAMESPACE") or "argocd"
        print(asyncio.run(resume(args.target, kubeconfig=Path(kubeconfig), force=args.force,
                                 argocd_namespace=argocd_namespace)))
    except ResumeError as exc:
        print(f"rollguard resume: {exc}", file=sys.stderr)
        return 1
    return 0


def add_resume_command(sub: Any) -> None:
    """Register `rollguard resume NAMESPACE/DEPLOYMENT [--force] [--kubeconfig PATH]`."""
    parser = sub.add_parser("resume", help="give a Deployment back to its GitOps tool after a rollback "
                                            "(restore the sync settings rollguard suspended)")
    parser.add_argument("target", metavar="NAMESPACE/DEPLOYMENT")
    parser.add_argument("--force", action="store_true",
                        help="resume even while Git still holds the rolled-back revision (or it cannot be told)")
    parser.add_argument("--argocd-namespace", metavar="NAMESPACE",
                        help="where Argo CD Applications live when the tracking id does not say "
                             "(default: $ROLLGUARD_ARGOCD_NAMESPACE or argocd)")
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    parser.set_defaults(handler=_resume)
