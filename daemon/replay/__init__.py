"""`rollguard replay`: judge past rollouts with today's rules, as the daemon would have judged them.

* `history` — which rollouts happened and when (ReplicaSets, rollguard's persisted state, kube-state-metrics
  in Prometheus, `--at`): pure functions;
* `engine` — replays one rollout: the daemon's own `Analysis` (same schedule, same evaluator, same
  providers) on a clock set to the historical ticks, with Prometheus queried at each tick and the
  signals that cannot be replayed reported as such; nothing is ever written to the cluster;
* `report` — the text and JSON outputs; `html` — the self-contained HTML report with a chart per signal;
* `command` — the command line.
"""
