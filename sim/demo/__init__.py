"""`rollguard demo`: the whole story on the built-in simulated cluster, and the stack the end-to-end tests use."""
