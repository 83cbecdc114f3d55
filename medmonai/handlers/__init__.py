"""Ignite handlers; filled by the classification work."""
