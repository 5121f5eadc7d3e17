"""Conformance: feature names, profiles and the machine-readable report."""
