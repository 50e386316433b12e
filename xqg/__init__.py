"""xqg: cross-lingual query generation (xQG) for dense retrieval, as Ray batch jobs."""

__version__ = "0.1.0"
