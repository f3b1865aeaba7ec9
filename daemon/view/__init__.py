"""What people see of the analyses: the `/api/v2/analyses` schema, built by pure functions (no I/O).

* `history` — the bounded record an analysis keeps of its signals and rule timers;
* `schema` — one analysis (live, finished, or read back from the state annotation) as the API's JSON;
* `text` — the words and numbers shared by the API, `rollguard get` and the demo (`pending 4s of 6s`).
"""
