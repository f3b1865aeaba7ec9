"""rollguard: watches Deployment rollouts, judges them by SRE-written rules, rolls back bad ones."""

__version__ = "0.1.0.dev0"
