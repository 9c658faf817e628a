"""Benchmarks: the batch loader against a textbook pipeline, and the whole engine's training throughput."""
