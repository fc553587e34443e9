"""Benchmarks (run as scripts: ``python benchmarks/<name>.py``)."""
