"""Preprocessing transforms: loading, orientation, spacing, intensity normalization presets, denoising."""
