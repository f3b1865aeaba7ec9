"""GitOps-aware rollback: recognise Deployments owned by Argo CD or Flux (`owner`), look up and suspend
their owner around an undo (`lookup`, through the one writer), and `rollguard resume` (`resume`)."""
