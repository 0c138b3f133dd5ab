"""The benchmark harness (see README.md; run with `python -m benchmarks`)."""
