"""What the generator produced: sample queries per language and the share that name the passage's entity."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from xqg.layout import GENERATE, corpus_dir, generated_dir, parse_lang_shard
from xqg.rundir import RunDir

_PAREN = re.compile(r"\s*\([^)]*\)\s*$")
_WORD = re.compile(r"\w+")


def entity_keys(titles: list[str]) -> list[str]:
    """Each title's rarest word among these titles (a trailing "(...)" dropped): 'Mount Velmora' -> 'Velmora'.

    The rarest word is what tells a title from the others ('Festival', 'Mount' or a first name shared by many
    titles does not), so a query that contains it names the passage's entity.
    """
    words = [_WORD.findall(_PAREN.sub("", t or "")) for t in titles]
    df = Counter(w.lower() for ws in words for w in set(ws))
    return [min(ws, key=lambda w: (df[w.lower()], -len(w))) if ws else "" for ws in words]


def generated_quality(run: RunDir, languages: list[str], limit: int = 2000, samples: int = 3) -> dict[str, Any]:
    """Per language: queries measured, the share containing their passage's entity (title key), a few samples.

    Measured on the generated rows of the lowest complete shard of each language, at most ``limit`` passages, so
    the figure costs the same on a demo and on 18M passages.
    """
    units: dict[str, int] = {}
    for unit in sorted(run.done_units(GENERATE)):
        parsed = parse_lang_shard(unit)
        if parsed is not None and parsed[0] in languages:
            units.setdefault(parsed[0], parsed[1])
    out: dict[str, Any] = {"limit": limit, "by_lang": {}}
    corpus_cache: dict[int, dict[str, tuple[str, str]]] = {}
    for lang in languages:
        if lang not in units:
            continue
        shard = units[lang]
        if shard not in corpus_cache:
            corpus = run.read_dir(corpus_dir(shard), ["docid", "title"])
            titles = corpus["title"].to_pylist()
            corpus_cache[shard] = dict(zip(corpus["docid"].to_pylist(), zip(titles, entity_keys(titles))))
        about = corpus_cache[shard]
        table = run.read_dir(generated_dir(lang, shard), ["docid", "queries"]).slice(0, limit)
        table = table.filter(pc.is_in(table["docid"], value_set=pa.array(list(about), pa.string())))
        n_queries = n_named = 0
        shown: list[dict[str, str]] = []
        for docid, queries in zip(table["docid"].to_pylist(), table["queries"].to_pylist()):
            title, key = about[docid]
            for q in queries or []:
                n_queries += 1
                n_named += bool(key) and key.lower() in q.lower()
            if len(shown) < samples and queries:
                shown.append({"docid": docid, "title": title, "entity": key, "query": queries[0]})
        out["by_lang"][lang] = {
            "shard": shard, "passages": table.num_rows, "queries": n_queries,
            "with_entity": round(100.0 * n_named / n_queries, 1) if n_queries else 0.0, "samples": shown,
        }
    return out
