"""Benchmarks of provider-jobs' hot paths, each against a baseline run in the same invocation."""
