"""Benchmarks, each a module run from the repository root as `.venv/bin/python -m bench.NAME`; results in results/."""
