"""Stage selectors shared by the command lines: --languages and --shards, parsed and checked before any work."""

from __future__ import annotations

import re

from xqg.config import ConfigError

_SHARD_RANGE = re.compile(r"(?P<first>[0-9]+)\s*(?:-\s*(?P<last>[0-9]+))?")  # ASCII digits: int() of '²' fails


def parse_languages(value: str | None) -> list[str] | None:
    """'sw,id' -> ['sw', 'id'] (normalised); None stays None; a list that names no language is a ConfigError."""
    if value is None:
        return None
    from xqg.languages import normalise_code

    try:
        codes = [normalise_code(c) for c in value.split(",") if c.strip()]
    except ValueError as e:
        raise ConfigError(f"--languages: {e}") from None
    if not codes:  # would select nothing: a run that does no work and exits 0
        raise ConfigError(f"--languages names no language: {value!r}")
    return codes


def parse_shards(value: str | None) -> set[int] | None:
    """'0-9,12' -> {0..9, 12}; None stays None; a reversed range (9-0) or no shard at all is a ConfigError."""
    if value is None:
        return None
    out: set[int] = set()
    usage = f"--shards expects shard numbers and ranges like 0-9,12, got {value!r}"
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        match = _SHARD_RANGE.fullmatch(part)
        if match is None:
            raise ConfigError(usage)
        first = int(match["first"])
        last = int(match["last"]) if match["last"] is not None else first
        if last < first:  # range(9, 1) is empty: the run would do nothing and exit 0
            raise ConfigError(f"--shards: the range {part!r} is reversed (write {last}-{first})")
        out.update(range(first, last + 1))
    if not out:
        raise ConfigError(f"--shards names no shard: {value!r}")
    return out
