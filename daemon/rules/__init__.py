"""Rollback rules: the YAML policies SREs write, and the pure logic that judges a rollout by them.

`model` (typed, frozen policy objects) ← `loader` (strict YAML with file:line:field errors) which uses
`durations`, `templates` and `expressions` (CEL); `evaluate` turns measurements into a `Verdict`;
`check` is `rollguard check`. Nothing here does I/O except the loader reading files.
"""
