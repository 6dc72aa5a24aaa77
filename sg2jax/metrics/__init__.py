"""Metrics of REFERENCE.md §5 and the feature networks they use."""
