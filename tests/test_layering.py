"""Layers point down only: dags -> plugins (sleeve_airflow) -> stage packages -> sleeve (core).

Every import statement in the core and the stage packages is checked, at module level and
inside functions (a lazy import is still a dependency): the core imports no stage and no
Airflow; a stage imports no other stage (shared state lives in the core) and no Airflow.
dags/ and plugins/ may import anything below them.

The simulator (``simulation/``: users with hidden tastes) sits above everything and drives
the DAGs as users and an operator would. Nothing the loop is made of may see it: not the core,
not a stage (training, evaluation and the gate must never learn the taste function), not a
DAG, not a plugin -- only the demo drivers (``plugins/sleeve_airflow/demo*.py``) may borrow
its users for their reviews.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("crawlers", "training", "inference", "service")
AIRFLOW = ("airflow", "sleeve_airflow")
SIMULATOR = "simulation"
CHECKED = ("sleeve", *STAGES)


def forbidden_for(package: str) -> set[str]:
    """Top-level packages that ``package`` must not import."""
    return {*STAGES, *AIRFLOW, SIMULATOR} - {package}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(package: str, root: Path) -> list[str]:
    forbidden = forbidden_for(package)
    return [f"{path.relative_to(root.parent)}:{line} imports {module}"
            for path in sorted(root.rglob("*.py"))
            for line, module in imported_modules(path)
            if module.split(".")[0] in forbidden]


def test_layers_point_down_only():
    checked = [p for p in CHECKED if (REPO / p).is_dir()]
    assert {"sleeve", "crawlers", "training", "inference"} <= set(checked)
    assert [v for package in checked for v in violations(package, REPO / package)] == []


def test_the_check_sees_lazy_and_module_level_imports(tmp_path):
    root = tmp_path / "inference"
    root.mkdir()
    (root / "shards.py").write_text(
        "import json\nfrom sleeve.ids import stable_id\nfrom . import generator\n"
        "import airflow.sdk\n\n\ndef f():\n    from training.registry import get_version\n")
    assert violations("inference", root) == ["inference/shards.py:4 imports airflow.sdk",
                                             "inference/shards.py:8 imports training.registry"]
    assert forbidden_for("sleeve") == {"crawlers", "training", "inference", "service", "airflow", "sleeve_airflow",
                                       "simulation"}


def simulator_imports(root: Path, allowed=()) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line} imports {module}"
            for path in sorted(root.rglob("*.py")) if not any(path.match(pattern) for pattern in allowed)
            for line, module in imported_modules(path) if module.split(".")[0] == SIMULATOR]


def test_nothing_in_the_loop_sees_the_simulated_tastes(tmp_path):
    assert (REPO / SIMULATOR).is_dir()
    assert simulator_imports(REPO / "dags") == []
    assert simulator_imports(REPO / "plugins", allowed=("demo*.py",)) == []
    # the core and the stages are covered by test_layers_point_down_only; the rule bites there too:
    root = tmp_path / "training"
    root.mkdir()
    (root / "gate.py").write_text("def decide():\n    from simulation.taste import Taste\n")
    assert violations("training", root) == ["training/gate.py:2 imports simulation.taste"]
