"""The one check for everything that becomes a path inside a run directory: nothing may lead outside it."""

from __future__ import annotations

import posixpath

_FORBIDDEN = ("/", "\\", "\x00")


def check_name(kind: str, value: str) -> str:
    """A user-chosen name that becomes one path part: plain, no separators, nothing that leaves the run."""
    if (
        not isinstance(value, str) or not value or value != value.strip() or value.startswith(".")
        or any(c in value for c in _FORBIDDEN) or any(ord(c) < 32 for c in value)
    ):
        raise ValueError(f"{kind} {value!r} must be a plain name (no '/', '\\\\', control characters or leading '.')")
    return value


def check_run_path(kind: str, rel: str) -> str:
    """A run-relative path (e.g. the "models/qg" of a "run:models/qg" model ref): every part a plain name."""
    parts = rel.split("/")
    if not rel or posixpath.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{kind} {rel!r} must be a relative path inside the run directory")
    for part in parts:
        check_name(kind, part)
    return rel
