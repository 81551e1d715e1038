"""A GitHub API and git server of the project's own, for tests (GitHub is not reachable)."""
