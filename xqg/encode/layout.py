"""Unit names of the encode stage; a unit's name is also its folder under <run>/embeddings/."""

from __future__ import annotations

import posixpath

from xqg.rundir import shard_name

STAGE = "encode"
PASSAGES = "passages"
QUERIES = "queries"


def generated_variant(num_queries: int | None) -> str:
    """Folder of the generated-query sums: 'generated' (all queries) or 'generated-k{k}' (first k of each list)."""
    return "generated" if num_queries is None else f"generated-k{num_queries}"


def passages_unit(shard: int) -> str:
    """passages/shard=NNNNN."""
    return posixpath.join(PASSAGES, shard_name(shard))


def generated_unit(variant: str, lang: str, shard: int) -> str:
    """generated[-kK]/lang=xx/shard=NNNNN."""
    return posixpath.join(variant, f"lang={lang}", shard_name(shard))


def queries_unit(name: str) -> str:
    """queries/<set>."""
    return posixpath.join(QUERIES, name)


def embeddings_dir(unit: str) -> str:
    """Folder (relative to the run) that holds a unit's embeddings."""
    return posixpath.join("embeddings", unit)


def parse_generated_unit(unit: str) -> tuple[str, str, int] | None:
    """'generated-k3/lang=ar/shard=00002' -> ('generated-k3', 'ar', 2); None for other units."""
    parts = unit.split("/")
    if len(parts) != 3 or not parts[0].startswith("generated") or not parts[1].startswith("lang="):
        return None
    if not parts[2].startswith("shard="):
        return None
    return parts[0], parts[1][len("lang="):], int(parts[2][len("shard="):])
