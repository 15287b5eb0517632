"""Dependencies point one way: core -> domains; no domain imports another (DESIGN.md). The domains
are the ``mixerzoo.domains`` entry points of pyproject.toml, one per domain package, and a
forecasting run of the CLI imports no other domain."""

import ast
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
GROUP = "mixerzoo.domains"
# Top-level folders of the repository that are not sub-packages of mixerzoo.
NOT_PACKAGES = {"tests", "benchmarks", "configs", "build", "runs"}


def _declared_domains() -> dict[str, str]:
    """Domain -> module of the entry points declared in pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"][GROUP])


def _packages() -> list[str]:
    return sorted(
        p.name
        for p in REPO.iterdir()
        if p.is_dir() and (p / "__init__.py").is_file() and p.name not in NOT_PACKAGES
    )


DOMAINS = sorted(_declared_domains())


def test_every_package_but_core_is_a_declared_domain():
    declared = _declared_domains()
    assert sorted(set(_packages()) - {"core"}) == DOMAINS
    assert all(module == f"mixerzoo.{name}" for name, module in declared.items())


def test_installed_entry_points_are_the_declared_ones():
    installed = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert installed == _declared_domains(), (
        "the installed metadata differs from pyproject.toml: reinstall (pip install -e .)"
    )


def _string_arg(node: ast.Call) -> str | None:
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _imports(path: Path) -> set[str]:
    """Modules a file imports: import statements, ``importlib.import_module("...")`` and
    ``__import__("...")`` with a literal name (an f-string counts by its literal prefix)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: use absolute imports (from mixerzoo....)")
            found.add(node.module or "")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in ("import_module", "__import__", "find_spec"):
                continue
            literal = _string_arg(node)
            if literal is None and node.args and isinstance(node.args[0], ast.JoinedStr):
                head = node.args[0].values[0] if node.args[0].values else None
                if isinstance(head, ast.Constant):
                    literal = str(head.value)
            if literal:
                found.add(literal)
    return found


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mixerzoo" and parts[1] else None


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


def test_the_import_scan_sees_imports_made_by_name(tmp_path):
    source = tmp_path / "sneaky.py"
    source.write_text(
        "import importlib\n"
        "importlib.import_module('mixerzoo.vision.models')\n"
        "__import__('mixerzoo.audio')\n"
        "domain = 'rl'\n"
        "importlib.import_module(f'mixerzoo.medical.{domain}')\n"
    )
    assert {_package_of(m) for m in _imports(source)} >= {"vision", "audio", "medical"}


def test_core_imports_no_domain_at_import_time():
    code = (
        "import sys, mixerzoo.core, mixerzoo.core.ops, mixerzoo.core.blocks, mixerzoo.core.cli, "
        "mixerzoo.core.task;"
        f"print([d for d in {DOMAINS!r} if 'mixerzoo.' + d in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# The other domains' libraries: a forecasting run imports none of them. (torchvision is not
# listed: pytorch_lightning and torchmetrics import it themselves whenever it is installed.)
OTHER_STACKS = ("timm", "monai", "nibabel", "torchaudio", "soundfile", "pesq", "pystoi")
OTHER_STACKS += ("gymnasium", "popgym", "minigrid")


def test_a_forecasting_fit_imports_no_other_domain(tmp_path):
    """`mixerzoo fit` on a forecasting config (fast_dev_run, tiny CSV), with full class paths and
    with bare class names, in a fresh process: only mixerzoo.timeseries of the domains is
    imported, and none of the other domains' libraries."""
    csv = tmp_path / "toy.csv"
    t = np.arange(300)
    frame = {"date": pd.date_range("2020-01-01", periods=300, freq="h")}
    frame.update({f"v{j}": np.sin(2 * np.pi * t / 24 + j) for j in range(3)})
    pd.DataFrame(frame).to_csv(csv, index=False)
    runs = []
    for spelling in ("full", "bare"):
        model, task, data = "ITransformer", "ForecastTask", "ForecastDataModule"
        if spelling == "full":
            model, task, data = (
                f"mixerzoo.timeseries.{n}" for n in ("models." + model, task, data)
            )
        config = tmp_path / f"{spelling}.yaml"
        config.write_text(
            f"model:\n  class_path: {task}\n  init_args:\n    model:\n      class_path: {model}\n"
            f"      init_args: {{d_model: 8, d_ff: 8, n_heads: 2, e_layers: 1}}\n"
            f"data:\n  class_path: {data}\n  init_args: {{data_path: {csv}, target: v2, seq_len: 24,"
            f" label_len: 12, pred_len: 6, batch_size: 8}}\n"
        )
        runs.append(["fit", "--config", str(config), "--trainer.fast_dev_run", "1"])
        runs[-1] += ["--trainer.enable_progress_bar", "false"]
        runs[-1] += ["--trainer.default_root_dir", str(tmp_path)]
    code = (
        "import json, sys\nfrom mixerzoo.core.cli import main\n"
        f"for args in {runs!r}:\n    main(args)\n"
        "print('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Test results") == 2  # both runs trained and tested
    line = [s for s in result.stdout.splitlines() if s.startswith("MODULES=")][-1]
    modules = set(json.loads(line.removeprefix("MODULES=")))
    assert "mixerzoo.timeseries" in modules
    domains = {m.split(".")[1] for m in modules if m.startswith("mixerzoo.") and "." in m}
    assert domains & set(DOMAINS) == {"timeseries"}
    assert not {m.split(".")[0] for m in modules} & set(OTHER_STACKS)
