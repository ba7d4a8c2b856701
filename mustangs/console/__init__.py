"""What the three CLIs share on the terminal: help formatting and entry points, ranged argument types,
progress bars.

May import: mustangs (its version), mustangs.errors, mustangs.threads; nothing heavy at import time (``--help`` answers at once).
"""
