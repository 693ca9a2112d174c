"""Drift monitoring: features that mean something for recommendation, measured the same way on every window."""
