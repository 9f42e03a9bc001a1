"""Layers point down only: dags -> plugins (sleeve_airflow) -> stage packages -> sleeve (core).

Every import statement in the core and the stage packages is checked, at module level and
inside functions (a lazy import is still a dependency): the core imports no stage and no
Airflow; a stage imports no other stage (shared state lives in the core) and no Airflow.
dags/ and plugins/ may import anything below them.

One stage is a front door rather than a step: the web service builds requests with the
pipeline's own functions, so ``service`` may import the public names of the modules listed in
:data:`SERVICE_USES` (never a private ``_name``, never another module of those stages), and
nothing in the layers imports ``service``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("crawlers", "training", "inference", "service")
AIRFLOW = ("airflow", "sleeve_airflow")
CHECKED = ("sleeve", *STAGES)
LAYERS = (*CHECKED, "dags", "plugins")
# What the service calls: the labeller, prompt builder, content policy and shard path of
# inference; the photo intake, DreamBooth request and forget path of training.
SERVICE_USES = frozenset({
    "inference.labels", "inference.prompts", "inference.policy", "inference.shards", "inference.generate_job",
    "training.photos", "training.dreambooth", "training.privacy",
})


def forbidden_for(package: str) -> set[str]:
    """Top-level packages that ``package`` must not import."""
    return {*STAGES, *AIRFLOW} - {package}


def _allowed(package: str, module: str, names: list[str]) -> bool:
    """The service's exception: public names of the modules in SERVICE_USES."""
    return package == "service" and module in SERVICE_USES and not any(n.startswith("_") for n in names)


def imported_modules(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every absolute import in the file, wherever it stands
    (``names`` are those of ``from module import ...``; empty for ``import module``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def violations(package: str, root: Path) -> list[str]:
    forbidden = forbidden_for(package)
    return [f"{path.relative_to(root.parent)}:{line} imports {module}"
            for path in sorted(root.rglob("*.py"))
            for line, module, names in imported_modules(path)
            if module.split(".")[0] in forbidden and not _allowed(package, module, names)]


def service_importers(root: Path) -> list[str]:
    """Files of the layers (core, stages, plugins, dags) outside service/ that import it."""
    return [f"{path.relative_to(root)}:{line} imports {module}"
            for layer in LAYERS if layer != "service" and (root / layer).is_dir()
            for path in sorted((root / layer).rglob("*.py"))
            for line, module, _ in imported_modules(path)
            if module.split(".")[0] == "service"]


def test_layers_point_down_only():
    checked = [p for p in CHECKED if (REPO / p).is_dir()]
    assert {"sleeve", "crawlers", "training", "inference"} <= set(checked)
    assert [v for package in checked for v in violations(package, REPO / package)] == []


def test_nothing_in_the_layers_imports_the_service():
    assert service_importers(REPO) == []


def test_the_service_may_use_only_the_listed_public_functions(tmp_path):
    root = tmp_path / "service"
    root.mkdir()
    (root / "app.py").write_text(
        "from inference.policy import policy_violations\nfrom training.privacy import forget_user\n"
        "from inference.labels import _term\nfrom inference.generator import CoverGenerator\n"
        "import crawlers.http\nimport airflow\n")
    assert violations("service", root) == ["service/app.py:3 imports inference.labels",
                                           "service/app.py:4 imports inference.generator",
                                           "service/app.py:5 imports crawlers.http",
                                           "service/app.py:6 imports airflow"]
    # The exception is the service's alone: a stage still may not use another stage.
    (root / "app.py").write_text("from inference.policy import policy_violations\n")
    assert violations("training", root) == ["service/app.py:1 imports inference.policy"]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hook.py").write_text("def f():\n    from service.app import create_app\n")
    assert service_importers(tmp_path) == ["plugins/hook.py:2 imports service.app"]


def test_the_check_sees_lazy_and_module_level_imports(tmp_path):
    root = tmp_path / "inference"
    root.mkdir()
    (root / "shards.py").write_text(
        "import json\nfrom sleeve.ids import stable_id\nfrom . import generator\n"
        "import airflow.sdk\n\n\ndef f():\n    from training.registry import get_version\n")
    assert violations("inference", root) == ["inference/shards.py:4 imports airflow.sdk",
                                             "inference/shards.py:8 imports training.registry"]
    assert forbidden_for("sleeve") == {"crawlers", "training", "inference", "service", "airflow", "sleeve_airflow"}
