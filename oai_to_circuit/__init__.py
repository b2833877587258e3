"""Backfill, name and true-up toolkit for the oai-to-circuit proxy's Splunk usage events."""

__version__ = "0.1.0"
