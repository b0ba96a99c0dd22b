"""Benchmarks: pytest-benchmark, the Rust path and the NumPy reference side by side.

Run: ``python -m pytest benches --benchmark-only`` (add ``--benchmark-json out.json`` and
``python tools/bench_report.py out.json`` for the README table). They are not collected by the
normal test run (``testpaths = ["tests"]``).
"""
