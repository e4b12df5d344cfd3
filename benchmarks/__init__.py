"""Benchmarks of the release in exported/ (`make bench`) and the committed baseline the regression tests read."""
