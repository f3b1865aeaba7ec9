"""A kubeconfig file pointing kubectl and kubernetes_asyncio at the simulated API server.

The server speaks plain HTTP on the loopback interface, so the cluster entry carries only the
`server` URL (no CA, no `insecure-skip-tls-verify`, which kubectl refuses for http URLs anyway).
The user entry holds a static bearer token: the simulator accepts any token, and a user without
credentials would make some kubectl versions prompt for a password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SIM_TOKEN = "rollguard-sim-token"


def kubeconfig_dict(server_url: str, *, context: str = "rollguard-sim", namespace: str = "default",
                    token: str = SIM_TOKEN) -> dict[str, Any]:
    """The kubeconfig document as data; `token` is who the API server's audit log says asked."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: str | Path, server_url: str, *, context: str = "rollguard-sim",
                     namespace: str = "default", token: str = SIM_TOKEN) -> Path:
    """Write a kubeconfig for `server_url` (e.g. `http://127.0.0.1:38211`) to `path`; returns the path.

    The file is private to the user (mode 0600), as kubectl warns about group/world-readable configs.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kubeconfig_dict(server_url, context=context, namespace=namespace, token=token),
                                     sort_keys=False))
    target.chmod(0o600)
    return target
