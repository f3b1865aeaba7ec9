"""Everything rollguard knows about the Kubernetes API: client set-up, watching, rollout state, rollback, events.

`rollout_state` is pure (plain dicts in, values out) and imports nothing that does I/O; the other
modules talk to the API server.
"""
