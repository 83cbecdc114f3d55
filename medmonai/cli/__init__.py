"""Command-line interface (`medmonai ...`)."""
