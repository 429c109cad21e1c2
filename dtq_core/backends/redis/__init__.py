"""The Redis backend: many worker processes on many machines share one queue."""
