"""Runnable recipes: `python recipes/<name>.py`, `accelerate launch recipes/<name>.py`, or `from recipes.<name> import run`."""
