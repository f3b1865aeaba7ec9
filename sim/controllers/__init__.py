"""The simulated cluster's controllers: what kube-controller-manager, the scheduler and the kubelet do.

* `manager.ControllerManager(store, clock)`: work queues fed by a Store listener, one named worker per
  controller, clock-driven timers, garbage collection of dependents; `start()`/`stop()` or `async with`.
* `deployment`: the Deployment controller (ReplicaSets, revisions, RollingUpdate/Recreate, conditions).
* `replicaset`: the ReplicaSet controller and the ownership/pod helpers the others share.
* `jobs`: the Job controller. `kubelet`: pod lifecycle driven by `sim.behaviour`.
* `hashing`: `pod-template-hash`, template normalisation and equality. `events`: the core/v1 Event recorder.

Layering: hashing, events ← kubelet ← replicaset ← deployment, jobs ← manager. Nothing here imports the
API server; the controllers only talk to the `Store`.
"""

from sim.controllers.kubelet import pod_is_available, pod_is_ready
from sim.controllers.manager import ControllerManager

__all__ = ["ControllerManager", "pod_is_available", "pod_is_ready"]
