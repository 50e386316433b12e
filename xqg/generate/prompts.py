"""Generation prompts (the paper's template) and stable seeds derived from the unit and the row."""

from __future__ import annotations

import hashlib
import re
import string

from xqg.languages import language_name

# A token of any tokenizer we meet spans far fewer characters than this; clipping the raw text first keeps a
# pathological passage (a 10 MB row) from costing seconds of tokenisation before truncation throws it away.
CHARS_PER_TOKEN_BOUND = 16

_SPACES = re.compile(r"[ \t]{2,}")
_FIELDS = {"language", "title", "text"}


def template_fields(template: str) -> set[str]:
    """The {field} names a template uses."""
    return {f if f else "{}" for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def check_template(template: str) -> None:
    """Raise ValueError when the template names a field other than language, title and text."""
    unknown = template_fields(template) - _FIELDS
    if unknown:
        raise ValueError(f"generate.template uses unknown fields {sorted(unknown)}; allowed: {sorted(_FIELDS)}")


def text_is_last(template: str) -> bool:
    """True when nothing but whitespace follows {text}: then right-truncating the prompt truncates the passage."""
    return template.rstrip().endswith("{text}")


def is_empty_passage(title: str | None, text: str | None) -> bool:
    """A passage with neither title nor text (after stripping) cannot prompt a question."""
    return not (title or "").strip() and not (text or "").strip()


def build_prompt(template: str, language: str, title: str | None, text: str | None, max_chars: int | None = None) -> str:
    """The prompt for one (passage, language): the template filled with the language's English name."""
    body = (text or "").strip()
    if max_chars is not None and len(body) > max_chars:
        body = body[:max_chars]
    prompt = template.format(language=language_name(language), title=(title or "").strip(), text=body)
    # An empty title leaves a double space; SentencePiece would keep it as an extra token.
    return _SPACES.sub(" ", prompt).strip()


def stable_seed(*parts: object, bits: int = 63) -> int:
    """A seed that depends only on the given parts (not on PYTHONHASHSEED, the process or the platform)."""
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    value = int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big")
    return value & ((1 << bits) - 1)


# Marks the stored order of a row's queries in the generate settings: a change of order is a change of output.
QUERY_ORDER = "sampling-order-v1"


def sampling_order(row_seed: int, n: int) -> list[int]:
    """A permutation of range(n) drawn from the row's seed alone: the order in which a row's n samples are stored.

    Engines such as CTranslate2 return the num_hypotheses samples of a prompt sorted by score, so "the first k
    of n" would be the k most likely, not k samples. Storing them in an order drawn independently of their
    content (a uniformly random permutation: sorting n independent hash values) makes every prefix of the list
    distributed like that many fresh samples. It depends only on the row's seed and n (no Python `random`, whose
    shuffle is not guaranteed across versions), so a redone unit stores the same order.
    """
    return sorted(range(n), key=lambda j: (stable_seed(row_seed, "order", j), j))


def in_sampling_order(queries: list[str], row_seed: int) -> list[str]:
    """A row's queries reordered by sampling_order (backend order in, independent-sample order out)."""
    return [queries[j] for j in sampling_order(row_seed, len(queries))]
