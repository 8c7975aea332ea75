"""Option values as users give them: a list typed as one string on the command line ("a,b") or already a
list (YAML, `run()` keywords)."""

from __future__ import annotations


def split_list(value, separator: str = ",") -> list[str] | None:
    """A list option given as one string ("a,b" on the command line) or already as a list (YAML, run())."""
    if value is None or isinstance(value, list):
        return value
    return [v.strip() for v in str(value).split(separator) if v.strip()] or None
