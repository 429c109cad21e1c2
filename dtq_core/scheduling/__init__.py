"""Scheduling: cron expressions, periodic tasks, DAG workflows, rate limits."""
