"""Asking a finished run questions: the command line (cli.main) and the Ray Serve app (serve.main, serve.build_app)."""

from xqg.ask.searcher import Ask, AskError, Searcher

__all__ = ["Ask", "AskError", "Searcher"]
