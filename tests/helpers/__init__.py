"""Set-up shared by the tests: the repository's paths and the config builders (import as `helpers.*`)."""
