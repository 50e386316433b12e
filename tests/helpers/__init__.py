"""Set-up shared by the tests: the repository's paths (helpers.paths) and the config builders (helpers.configs).

Imported as `helpers.*`: pytest puts tests/ on sys.path when it loads tests/conftest.py (the default prepend
import mode, no __init__.py in tests/), as it does for tests/processes.py.
"""
