"""Benchmarks: em-interp vs the ways users do it today, side by side (``python -m benchmarks.run``)."""
