"""Manifests of the demo's `backend` service: a Deployment whose behaviour is set by SIM_* env vars, and its Service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def backend_deployment(image: str, *, namespace: str = "staging", name: str = "backend", replicas: int = 3,
                       env: Mapping[str, str] | None = None, progress_deadline: int = 600,
                       change_cause: str | None = None) -> dict[str, Any]:
    """A Deployment as an SRE would apply it; `env` are the simulated workload's SIM_* knobs."""
    annotations = {"kubernetes.io/change-cause": change_cause} if change_cause else {}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}, "annotations": annotations},
        "spec": {
            "replicas": replicas, "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": name, "image": image, "ports": [{"name": "http", "containerPort": 8000}],
                    "env": [{"name": k, "value": v} for k, v in sorted((env or {}).items())],
                }]},
            },
        },
    }


def backend_service(*, namespace: str = "staging", name: str = "backend") -> dict[str, Any]:
    """The Service in front of it: `http://backend.staging:8000`."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
    }
