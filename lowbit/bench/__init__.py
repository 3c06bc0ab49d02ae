"""Benchmarks: scripts that measure and write their numbers under reports/bench/."""
