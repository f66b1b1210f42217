"""Benchmarks: a zero-latency upstream, load generators and the `make bench` / `make soak` drivers."""
