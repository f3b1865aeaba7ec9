"""Fault schedules that test rollguard's promises (docs/reliability.md).

`schedule` generates seeded schedules, `stack` runs the simulated cluster, receivers and `rollguard run`
subprocesses, `runner` plays a schedule and collects what an outsider sees, `checker` checks the
invariants, `launcher` starts the daemon (optionally a deliberately broken variant), `report` is the
command line (`python -m tests.chaos`).
"""
