"""End-to-end applications (the demo)."""
