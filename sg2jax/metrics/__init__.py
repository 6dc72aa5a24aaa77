"""Metrics of SPEC.md §4 and the feature networks they use."""
