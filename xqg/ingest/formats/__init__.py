"""Corpus formats: each module of this package is one format (a CorpusFormat subclass) that registers itself.

xqg.ingest.corpus looks them up by name (corpus.format) or detects them from a corpus's name or folder.
"""
