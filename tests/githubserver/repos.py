"""Bare git repositories on disk for the test GitHub server: write commits, read objects."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

AUTHOR_NAME = "Portside Tests"
AUTHOR_EMAIL = "tests@portside.invalid"
COMMIT_DATE = "2024-01-01T00:00:00Z"

_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": AUTHOR_NAME,
    "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
    "GIT_AUTHOR_DATE": COMMIT_DATE,
    "GIT_COMMITTER_NAME": AUTHOR_NAME,
    "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
    "GIT_COMMITTER_DATE": COMMIT_DATE,
}


@dataclass(frozen=True, slots=True)
class TreeEntry:
    mode: str
    kind: str  # "blob", "tree" or "commit" (a submodule)
    sha: str
    size: int  # 0 for anything but a blob
    path: str


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    tree: str
    parents: list[str]
    author_name: str
    author_email: str
    author_date: str
    committer_name: str
    committer_email: str
    committer_date: str
    message: str


def git(
    repo: Path, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> bytes:
    """Run `git --git-dir=<repo> <args>` and return its stdout; raise on failure."""
    result = subprocess.run(
        ["git", f"--git-dir={repo.resolve()}", *args],
        capture_output=True,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def init_bare_repo(path: Path, default_branch: str = "main") -> None:
    """Create a bare repository that lets clients fetch any commit by SHA."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)],
        check=True,
    )
    for key in ("uploadpack.allowReachableSHA1InWant", "uploadpack.allowAnySHA1InWant"):
        git(path, "config", key, "true")


def resolve_commit(repo: Path, ref: str) -> str | None:
    """The commit SHA a branch, tag or SHA names, or None."""
    if not ref or ref.startswith("-"):
        return None
    result = subprocess.run(
        ["git", f"--git-dir={repo}", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    return result.stdout.decode().strip() if result.returncode == 0 else None


def is_empty(repo: Path) -> bool:
    """Whether the repository has no commit on any branch (as just created on GitHub)."""
    return not git(repo, "for-each-ref", "--count=1", "refs/heads/").strip()


def resolve_ref(repo: Path, full_ref: str) -> str | None:
    """The SHA of an exact ref such as `refs/heads/main`, or None."""
    if not full_ref.startswith("refs/"):
        return None
    result = subprocess.run(
        ["git", f"--git-dir={repo}", "show-ref", "--verify", "--hash", full_ref],
        capture_output=True,
        check=False,
    )
    return result.stdout.decode().strip() if result.returncode == 0 else None


def commit_files(
    repo: Path,
    branch: str,
    files: Mapping[str, str | bytes | None],
    message: str = "Update files",
    base: str | None = None,
) -> str:
    """Commit `files` ({path: content}, None deletes) on top of `branch` and return the SHA.

    A new branch starts from `base` (a branch or SHA) when given, else with no parent.
    """
    parent = resolve_ref(repo, f"refs/heads/{branch}") or (
        resolve_commit(repo, base) if base else None
    )
    with tempfile.TemporaryDirectory(prefix="gh-worktree-") as tmp:
        work = Path(tmp, "work")
        work.mkdir()
        env = {**_COMMIT_ENV, "GIT_INDEX_FILE": str(Path(tmp, "index"))}
        run = [f"--work-tree={work}"]
        if parent:
            git(repo, *run, "read-tree", parent, env=env, cwd=work)
        for path, content in files.items():
            if content is None:
                git(repo, *run, "rm", "--cached", "--quiet", "--", path, env=env, cwd=work)
                continue
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
            git(repo, *run, "add", "--", path, env=env, cwd=work)
        tree = git(repo, *run, "write-tree", env=env, cwd=work).decode().strip()
        parents = ["-p", parent] if parent else []
        sha = git(repo, "commit-tree", tree, *parents, "-m", message, env=env).decode().strip()
    git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def delete_branch(repo: Path, branch: str) -> None:
    git(repo, "update-ref", "-d", f"refs/heads/{branch}")


def list_tree(repo: Path, commit: str, path: str = "") -> list[TreeEntry]:
    """Entries of the directory `path` ('' for the root) at `commit`; [] if it is not one."""
    spec = f"{commit}:{path}"  # "<commit>:" is the root tree
    if _object_type(repo, spec) != "tree":
        return []
    entries = []
    for line in git(repo, "ls-tree", "-l", "-z", spec).decode().split("\0"):
        if not line:
            continue
        meta, name = line.split("\t", 1)
        mode, kind, sha, size = meta.split()
        full = f"{path}/{name}" if path else name
        entries.append(TreeEntry(mode, kind, sha, int(size) if size != "-" else 0, full))
    return entries


def find_entry(repo: Path, commit: str, path: str) -> TreeEntry | None:
    """The tree entry at `path` in `commit`, or None when nothing is there."""
    if not path:
        return None
    siblings = list_tree(repo, commit, path.rpartition("/")[0])
    return next((e for e in siblings if e.path == path), None)


def read_blob(repo: Path, sha: str) -> bytes:
    return git(repo, "cat-file", "blob", sha)


def commit_info(repo: Path, sha: str) -> CommitInfo:
    fields = "%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
    out = git(repo, "log", "-1", f"--format={fields}", sha, "--").decode()
    sha, tree, parents, an, ae, ad, cn, ce, cd, message = out.split("\0")
    return CommitInfo(sha, tree, parents.split(), an, ae, ad, cn, ce, cd, message.rstrip("\n"))


def _object_type(repo: Path, spec: str) -> str | None:
    result = subprocess.run(
        ["git", f"--git-dir={repo}", "cat-file", "-t", spec], capture_output=True, check=False
    )
    return result.stdout.decode().strip() if result.returncode == 0 else None
