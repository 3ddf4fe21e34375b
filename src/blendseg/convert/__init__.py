"""Checkpoint converters from reference implementations."""
