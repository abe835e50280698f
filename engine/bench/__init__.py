"""Benchmarks (`sessrec bench ...`, `bench/*.py`): print a table and write JSON; never timed tests."""
