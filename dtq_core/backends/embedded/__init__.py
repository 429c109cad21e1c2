"""The embedded store: a write-ahead-logged, single-owner data directory."""
