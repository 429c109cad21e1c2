"""Monitoring: metrics, histograms, health, Prometheus exposition."""
