"""Benchmarks run by `make bench`: throughput as ratios to references measured in the same run."""
