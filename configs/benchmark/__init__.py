"""Benchmark grids: ``python -m jtransfer.benchmark --config=configs/benchmark/FILE.py[:ARG]``."""
