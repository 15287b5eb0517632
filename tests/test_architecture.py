"""Dependencies point one way: core -> domains; no domain imports another (DESIGN.md)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("timeseries", "vision", "medical", "audio", "rl")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: use absolute imports (from mixerzoo....)")
            found.add(node.module or "")
    return found


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mixerzoo" else None


@pytest.mark.parametrize("package", ("core", *DOMAINS))
def test_dependencies_point_one_way(package):
    allowed = {"core", package}
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module in _imports(path):
            target = _package_of(module)
            if target is not None and target not in allowed:
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_core_imports_no_domain_at_import_time():
    import subprocess
    import sys

    code = (
        "import sys, mixerzoo.core, mixerzoo.core.ops, mixerzoo.core.blocks;"
        f"print([d for d in {DOMAINS!r} if 'mixerzoo.' + d in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
