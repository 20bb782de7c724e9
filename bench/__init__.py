"""Benchmarks: separate from the tests; they report numbers, they do not pass or fail."""
