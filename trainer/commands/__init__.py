"""One module per ``trainer`` verb; each exposes ``register(subparsers)``."""
