"""The simulated Kubernetes cluster: an in-memory API server over real HTTP, the Deployment,
ReplicaSet and Job controllers, simulated pods and their workloads.

Used by `rollguard sim`, `rollguard demo`, the tests and the benchmarks; never imported by the
daemon's run path. Real clients (the kubectl binary, kubernetes_asyncio) are the judge of fidelity.
"""
