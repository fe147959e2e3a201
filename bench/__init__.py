"""Benchmarks (``make bench``): real server, real HTTP, figures written to bench/results.json."""
