"""Every DAG file loads through Airflow's DagBag, and importing it pulls in nothing heavy."""

import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY = ("torch", "diffusers", "transformers", "pandas", "peft", "accelerate", "matplotlib")


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_nothing_heavy(path):
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules); print('HEAVY=' + ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    heavy = [line for line in out.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], f"{path.name} imports {heavy}"
