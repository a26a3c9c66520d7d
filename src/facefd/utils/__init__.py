"""Utilities: Hydra helpers, logger factories."""
