"""Reliability hooks: retries, dead letters, deduplication, circuit breakers."""
