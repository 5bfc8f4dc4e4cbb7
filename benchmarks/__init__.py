"""Benchmarks (not timed tests): `python -m benchmarks.run [--quick]` writes docs/benchmarks.md."""
