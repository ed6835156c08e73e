"""Benchmarks of extsock against the real lab, each figure beside its baseline from the same run.

Run as ``python -m extsock_py.bench [--quick] [--smoke] [--trials N]`` (root: it builds labs of
real charon daemons).  Results go to stdout and ``.bench/results.json``; see BENCHMARKS.md.
"""
