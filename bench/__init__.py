"""Benchmarks: figures printed and written to bench/results/, never asserted by tests.

Run them as ``python -m bench <name>`` (``python -m bench --help`` lists them). Each sets up a
database and a Redis key prefix of its own on the local services (or BENCH_DATABASE_URL /
BENCH_REDIS_URL) and removes them afterwards.
"""
