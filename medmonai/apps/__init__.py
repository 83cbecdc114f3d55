"""End-to-end applications: the demo and the cross-validation runner."""
