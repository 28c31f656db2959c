"""Benchmarks of the policy -> flows path (issue 7): scenarios S1-S5, a runner that measures
each in a process of its own, and the report. See benchmarks/README.md."""
