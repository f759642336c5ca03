"""Benchmarks: each figure next to the bare limit that bounds it, measured in the same run."""
