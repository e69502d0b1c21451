"""Reporting: evaluate a checkpoint into metrics.json, report.md and figures (PNG)."""
