"""Installs the test hooks named in XQG_TEST_HOOKS in every Python process that has this folder on its PYTHONPATH
(a job a test starts, the Ray workers of a test cluster): see xqg_test_hooks. Tests only; never on a user's path."""

import os

if os.environ.get("XQG_TEST_HOOKS"):
    import xqg_test_hooks

    xqg_test_hooks.install_from_env()
