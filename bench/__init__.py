"""rollguard's benchmarks: `make bench` (= `.venv/bin/python -m bench`), one module per scenario.

| module | measures |
|---|---|
| `bench.detection` | first bad sample queryable in Prometheus → rollback PATCH → rollout complete again |
| `bench.rollback_cost` | `daemon.kube.rollback.undo` next to a `kubectl rollout undo` subprocess |
| `bench.scale` | the daemon (a separate process) watching thousands of Deployments: RSS, idle CPU, time to ready |
| `bench.analyses` | hundreds of concurrent analyses: CPU share, evaluation lag, Prometheus queries per second |
| `bench.rules_cost` | µs per rule per evaluation of the shipped policy |
| `bench.mass` | 10,000 rollouts at once, each analysed: lag, missed ticks, CPU, Prometheus requests/s |
| `bench.mass_cluster` | `mass_rollout`'s simulated cluster, in a process of its own |

Everything runs on this machine against the simulated cluster and a real Prometheus, on loopback.
Figures are comparable within one run only (the machine is shared): nothing here asserts timings.
`bench/RESULTS.md` has the figures, the machine they came from and the command that made them.
Nothing in `daemon/` imports this package.
"""
