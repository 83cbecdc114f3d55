"""Training and evaluation engines built on MONAI/Ignite; filled by the classification work."""
