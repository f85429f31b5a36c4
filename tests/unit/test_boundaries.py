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


# The layers of cdc_worker, lowest first: a part may import only parts of lower layers.
LAYERS: list[set[str]] = [
    {"errors", "checkpoint"},
    {"settings", "schema"},
    {"source", "store", "observability"},
    {"pipeline"},
    {"snapshots", "api", "devtools"},
    {"source_guard"},
    {"worker"},
    {"bootstrap"},
    {"cli"},
]
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """``cdc_worker.store.keys`` -> ``store``; ``cdc_worker.worker`` -> ``worker``."""
    return module.split(".")[1]


def imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    parts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "cdc_worker":
            parts |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cdc_worker."):
            parts.add(part_of(node.module or ""))
        elif isinstance(node, ast.Import):
            parts |= {part_of(a.name) for a in node.names if a.name.startswith("cdc_worker.")}
    return parts


def layering_violations(package: Path) -> list[str]:
    violations = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent).with_suffix("")
        if len(relative.parts) == 2 and relative.parts[1] == "__init__":
            continue
        me = relative.parts[1]
        for other in sorted(imported_parts(path) - {me}):
            if LAYER_OF.get(other, 99) >= LAYER_OF.get(me, -1):
                violations.append(f"{'/'.join(relative.parts)} imports {other}")
    return violations


def test_every_part_of_the_worker_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in (ROOT / "cdc_worker").iterdir()}
    parts -= {"__init__", "__pycache__", "py"}
    assert parts - set(LAYER_OF) == set()


def test_lower_layers_never_import_higher_ones() -> None:
    assert layering_violations(ROOT / "cdc_worker") == []


def test_the_layer_check_would_catch_the_store_importing_the_worker(tmp_path: Path) -> None:
    package = tmp_path / "cdc_worker"
    (package / "store").mkdir(parents=True)
    (package / "store" / "redis_store.py").write_text("from cdc_worker.worker import Worker\n")
    (package / "api").mkdir()
    (package / "api" / "app.py").write_text("from cdc_worker.devtools import seed\n")
    assert layering_violations(package) == [
        "cdc_worker/api/app imports devtools",
        "cdc_worker/store/redis_store imports worker",
    ]


def test_every_sub_package_says_what_it_owns_and_may_import() -> None:
    for init in (ROOT / "cdc_worker").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, init


def test_the_worker_package_keeps_about_a_dozen_top_level_modules() -> None:
    assert len(list((ROOT / "cdc_worker").glob("*.py"))) <= 12
