"""Widgets: each renders a slice of the snapshot and announces intent with messages."""
