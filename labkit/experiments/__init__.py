"""The experiments layer: load generators, faults, experiment runs, the fault matrix and the benchmark.

Builds on `labkit.pipeline` and `labkit.stack`.
"""
