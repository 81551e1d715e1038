"""Status columns are compared with and set to enum members, never bare strings.

A typo'd or retired status in a string literal (``"processing"`` was once queried and
never set) type-checks and silently matches nothing; an enum member cannot. The scan
reads the production code's syntax tree: ``x.status == "..."``, ``x.status in ("...",)``,
``X.status.in_(("...",))`` and ``x.status = "..."`` on the status-like attributes below.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("controlplane", "tasks")
# Columns whose values are an enum of controlplane.statuses / contracts.statuses.
STATUS_ATTRIBUTES = {"status", "scope", "build_lane", "deploy_when", "preview_protection"}


def _is_status(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in STATUS_ATTRIBUTES


def _has_string(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_has_string(element) for element in node.elts)
    return False


def status_literals(source: str) -> list[str]:
    """Each place in ``source`` that compares or sets a status attribute with a string."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            hit = any(map(_is_status, operands)) and any(map(_has_string, operands))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            hit = (
                node.func.attr in ("in_", "notin_")
                and _is_status(node.func.value)
                and any(map(_has_string, node.args))
            )
        elif isinstance(node, ast.Assign):
            hit = any(map(_is_status, node.targets)) and _has_string(node.value)
        else:
            continue
        if hit:
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {code}" for line, code in sorted(found)]


def test_the_scan_finds_each_form_of_literal() -> None:
    source = """
if build.status == "failed": pass
if environment.status in ("refused", EnvironmentStatus.INACTIVE): pass
select(Build).where(Build.status.in_(["queued"]))
token.scope = "admin"
if build.status == BuildStatus.FAILED and step.name == "clone": pass
environment.status = EnvironmentStatus.BUILDING
"""
    assert [hit.split(":")[0] for hit in status_literals(source)] == ["2", "3", "4", "5"]


def test_production_code_uses_status_enums() -> None:
    offenders = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative:
                continue
            offenders += [f"{relative}:{hit}" for hit in status_literals(path.read_text())]
    assert offenders == [], "use the status enums (controlplane.statuses):\n" + "\n".join(offenders)
