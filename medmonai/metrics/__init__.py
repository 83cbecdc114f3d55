"""Clinical metrics with confidence intervals; filled by the classification work."""
