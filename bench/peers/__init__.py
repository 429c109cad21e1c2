"""Worker apps of ``bench/redis_bench.py``: DTQ and the peers on the same Redis."""
