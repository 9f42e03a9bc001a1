"""The BigQuery emulator (bqemulator: DuckDB + SQLGlot behind BigQuery's REST API) as a test
service on 127.0.0.1, in its own virtual environment ``.venv-bqemu`` (it needs duckdb 1.5.5;
Sleeve pins another). ``make test`` builds that environment (``python -m tests.bqemu``); a
test session without it builds it on first use.

At start the emulator runs ``INSTALL spatial``, which would download the extension: the
environment's own HOME gets the copy that ships in the ``duckdb-extension-spatial`` wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-bqemu"
REQUIREMENTS = REPO / "tests" / "bqemu-requirements.txt"
STAMP = VENV / ".installed"


def ensure_venv() -> Path:
    """Build .venv-bqemu once (and again when the requirements change); returns its bqemulator."""
    exe = VENV / "bin" / "bqemulator"
    if STAMP.exists() and STAMP.read_text() == REQUIREMENTS.read_text():
        return exe
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    version = subprocess.run([str(VENV / "bin" / "python"), "-c", "import duckdb; print(duckdb.__version__)"],
                             check=True, capture_output=True, text=True).stdout.strip()
    shipped = next((VENV / "lib").glob(f"python*/site-packages/duckdb_extension_spatial/extensions/v{version}/"
                                       "spatial.duckdb_extension"))
    target = VENV / "home" / ".duckdb" / "extensions" / f"v{version}" / "linux_amd64"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shipped, target / shipped.name)
    STAMP.write_text(REQUIREMENTS.read_text())
    return exe


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def emulator(project: str, timeout: float = 120):
    """Run the emulator; yields its base URL (the value of BIGQUERY_EMULATOR_HOST)."""
    exe = ensure_venv()
    port = _free_port()
    log = Path(tempfile.mkstemp(prefix="bqemu-", suffix=".log")[1])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
           "HOME": str(VENV / "home")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "start", "--rest-host", "127.0.0.1", "--rest-port", str(port),
                                 "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--project", project],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bqemulator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/bigquery/v2/projects/{project}/datasets", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bqemulator not answering on {url} after {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


def added_columns() -> list[tuple[str, str, str]]:
    """(table, column, type) of every ``ALTER TABLE ... ADD COLUMN`` in the migrations."""
    import sqlglot
    from sqlglot import exp

    from sleeve.warehouse.base import migrations

    out = []
    for _, _, statements in migrations():
        for statement in statements:
            tree = sqlglot.parse_one(statement, read="bigquery")
            if isinstance(tree, exp.Alter):
                out += [(tree.this.name, a.name, a.args["kind"].sql("bigquery"))
                        for a in tree.args.get("actions") or () if isinstance(a, exp.ColumnDef)]
    return out


def sync_added_columns(warehouse) -> list[str]:
    """The emulator runs ``ALTER TABLE ADD COLUMN`` on its DuckDB table but leaves the table's
    metadata (``tables.get``, which the warehouse reads its columns and types from) as it was
    created; BigQuery updates both. Patch the metadata of each column the migrations added,
    after checking that the column really is in the table's data (a failed ALTER still fails
    here). Returns the ``table.column`` names patched."""
    from google.cloud import bigquery

    patched = []
    for table, column, kind in added_columns():
        warehouse.query(f"SELECT {column} FROM {table} LIMIT 0")  # raises when the ALTER did not run
        ref = f"{warehouse.project}.{warehouse.dataset}.{table}"
        meta = warehouse.client.get_table(ref)
        if column not in {f.name for f in meta.schema}:
            meta.schema = [*meta.schema, bigquery.SchemaField(column, kind)]
            warehouse.client.update_table(meta, ["schema"])
            patched.append(f"{table}.{column}")
    return patched


if __name__ == "__main__":
    print("bqemulator ready:", ensure_venv())
