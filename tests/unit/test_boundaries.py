"""The pure core imports no I/O library; settings are read in one place only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_CORE = {"redis", "pymysql", "pymysqlreplication", "sqlalchemy", "socket", "cdc_worker"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_projections_import_no_io_library() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN_IN_CORE)
        for path in (ROOT / "projections").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_boundary_check_would_catch_a_redis_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import redis.asyncio\nfrom sqlalchemy import text\n")
    assert imported_modules(module) & FORBIDDEN_IN_CORE == {"redis", "sqlalchemy"}


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = [
        str(path.relative_to(ROOT))
        for folder in ("cdc_worker", "projections")
        for path in (ROOT / folder).rglob("*.py")
        if "getenv" in path.read_text() or "os.environ[" in path.read_text()
    ]
    assert readers == []
