"""The model registry: ``model_versions`` rows and the ``production`` alias.

    production_version(warehouse, kind="style") -> dict | None   # what inference loads
    get_version(warehouse, version) -> dict | None
    register(warehouse, version=..., kind=..., base_model=..., adapter_uri=..., ...) -> dict
    promote(warehouse, version) -> dict                           # moves the alias
    start_canary(warehouse, version) -> dict                      # gate passed: serve a share first
    canary_version(warehouse, kind="style") -> dict | None        # what that share loads
    retire(warehouse, version, reason) -> dict                    # the users' verdict: no
    rollback(warehouse, kind="style") -> dict                     # previous production back

Rows carry ``adapter_uri`` (the folder holding ``pytorch_lora_weights.safetensors``),
``manifest_uri`` (the data snapshot), ``metrics`` (decoded JSON), ``status`` and ``alias``
(``production`` | ``canary`` | ``candidate`` | ``archived`` | ``retired`` | None). Each alias
move is ONE UPDATE statement, so readers see the old production version or the new one, never
none or two. A promotion records the version it replaced in ``previous_version``; ``rollback``
follows that link. A challenger that passed the offline gate becomes the ``canary`` (at most one
per kind, ``canary_of`` = the production version it is compared with); the users' ratings then
promote it (``canary`` -> ``production``) or retire it (``canary`` -> ``retired``), with the reason
in ``decision_reason``.

    python -m sleeve.registry show [--kind style|dreambooth]   # all kinds by default
    python -m sleeve.registry rollback [--kind style]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime

from sleeve.warehouse import Warehouse, open_warehouse

ALIASES = ("production", "canary", "candidate", "archived", "retired")
SETTLED = ("production", "canary", "retired")  # a re-registration keeps these


class RegistryError(RuntimeError):
    pass


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["metrics"] = json.loads(row["metrics"]) if row.get("metrics") else {}
    return row


def get_version(warehouse: Warehouse, version: str) -> dict | None:
    rows = warehouse.query("SELECT * FROM model_versions WHERE version = @version", {"version": version})
    return _decode(rows[0]) if rows else None


def production_version(warehouse: Warehouse, kind: str = "style") -> dict | None:
    rows = warehouse.query(
        "SELECT * FROM model_versions WHERE kind = @kind AND alias = 'production' ORDER BY promoted_at DESC",
        {"kind": kind})
    if len(rows) > 1:
        raise RegistryError(f"{len(rows)} {kind} versions are aliased production; run `python -m sleeve.registry show`")
    return _decode(rows[0]) if rows else None


def list_versions(warehouse: Warehouse, kind: str = "style") -> list[dict]:
    rows = warehouse.query("SELECT * FROM model_versions WHERE kind = @kind ORDER BY created_at, version", {"kind": kind})
    return [_decode(r) for r in rows]


def register(warehouse: Warehouse, *, version: str, kind: str, base_model: str, adapter_uri: str, manifest_uri: str,
             metrics: dict, training_run_id: str, user_id: str | None = None, alias: str | None = "candidate",
             now: datetime | None = None) -> dict:
    """Insert or refresh a version (idempotent on ``version``). A version already aliased
    production keeps its alias and status, so re-running a finished run changes nothing."""
    if alias not in ("candidate", "archived", None):
        raise RegistryError(f"register() takes alias candidate/archived/None, not {alias!r}; "
                            "use promote() or start_canary()")
    now = now or datetime.now(UTC)
    existing = get_version(warehouse, version)
    row = {
        "version": version, "kind": kind, "base_model": base_model, "adapter_uri": adapter_uri,
        "manifest_uri": manifest_uri, "metrics": json.dumps(metrics, sort_keys=True, default=str),
        "status": "registered", "alias": alias, "user_id": user_id, "training_run_id": training_run_id,
        "created_at": existing["created_at"] if existing else now, "updated_at": now,
    }
    if existing and existing["alias"] in SETTLED:
        row.update(status=existing["status"], alias=existing["alias"])
    warehouse.upsert("model_versions", [row])
    return get_version(warehouse, version)


def serves_canary(request_id: str, share: float) -> bool:
    """Whether a request goes to the canary: a pure function of its id (a re-run or a retry
    assigns it the same way), taking ``share`` of all requests."""
    position = int(hashlib.sha256(f"canary:{request_id}".encode()).hexdigest()[:15], 16) / 16**15
    return position < share


def canary_version(warehouse: Warehouse, kind: str = "style") -> dict | None:
    rows = warehouse.query("SELECT * FROM model_versions WHERE kind = @kind AND alias = 'canary'", {"kind": kind})
    if len(rows) > 1:
        raise RegistryError(f"{len(rows)} {kind} versions are aliased canary; run `python -m sleeve.registry show`")
    return _decode(rows[0]) if rows else None


def start_canary(warehouse: Warehouse, version: str, now: datetime | None = None) -> dict:
    """Make ``version`` the canary against today's production; an earlier canary still
    running is retired (superseded), in the same statement."""
    target = get_version(warehouse, version)
    if target is None:
        raise RegistryError(f"unknown model version {version!r}")
    if target["alias"] in SETTLED:
        return target
    current = production_version(warehouse, target["kind"])
    warehouse.execute(
        """
        UPDATE model_versions SET
          alias = CASE WHEN version = @version THEN 'canary' ELSE 'retired' END,
          status = CASE WHEN version = @version THEN 'canary' ELSE 'retired' END,
          canary_of = CASE WHEN version = @version THEN @production ELSE canary_of END,
          canary_started_at = CASE WHEN version = @version THEN @now ELSE canary_started_at END,
          decided_at = CASE WHEN version = @version THEN decided_at ELSE @now END,
          decision_reason = CASE WHEN version = @version THEN decision_reason ELSE @superseded END,
          updated_at = @now
        WHERE kind = @kind AND (version = @version OR alias = 'canary')
        """,
        {"version": version, "kind": target["kind"], "now": now or datetime.now(UTC),
         "production": current["version"] if current else None, "superseded": f"superseded by canary {version}"},
    )
    return get_version(warehouse, version)


def retire(warehouse: Warehouse, version: str, reason: str, now: datetime | None = None) -> dict:
    """The users' ratings did not show the canary better: it stops serving, with the reason."""
    target = get_version(warehouse, version)
    if target is None or target["alias"] != "canary":
        raise RegistryError(f"{version!r} is not the canary (alias {target and target['alias']!r}); nothing to retire")
    warehouse.execute(
        "UPDATE model_versions SET alias = 'retired', status = 'retired', decided_at = @now, decision_reason = @reason,"
        " updated_at = @now WHERE version = @version",
        {"version": version, "reason": reason, "now": now or datetime.now(UTC)})
    return get_version(warehouse, version)


def promote(warehouse: Warehouse, version: str, now: datetime | None = None, reason: str | None = None) -> dict:
    """Make ``version`` production and archive the one it replaces, in one statement."""
    target = get_version(warehouse, version)
    if target is None:
        raise RegistryError(f"unknown model version {version!r}")
    if target["alias"] == "production":
        return target
    current = production_version(warehouse, target["kind"])
    warehouse.execute(
        """
        UPDATE model_versions SET
          alias = CASE WHEN version = @version THEN 'production' ELSE 'archived' END,
          status = CASE WHEN version = @version THEN 'promoted' ELSE 'archived' END,
          previous_version = CASE WHEN version = @version THEN @previous ELSE previous_version END,
          promoted_at = CASE WHEN version = @version THEN @now ELSE promoted_at END,
          decided_at = CASE WHEN version = @version THEN @now ELSE decided_at END,
          decision_reason = CASE WHEN version = @version THEN @reason ELSE decision_reason END,
          updated_at = @now
        WHERE kind = @kind AND (version = @version OR alias = 'production')
        """,
        {"version": version, "kind": target["kind"], "now": now or datetime.now(UTC),
         "previous": current["version"] if current else None, "reason": reason},
    )
    return get_version(warehouse, version)


def reject(warehouse: Warehouse, version: str, now: datetime | None = None) -> dict:
    """The gate kept the champion: the challenger stays registered, unaliased, status rejected."""
    warehouse.execute(
        "UPDATE model_versions SET status = 'rejected', alias = NULL, updated_at = @now "
        "WHERE version = @version AND (alias IS NULL OR alias <> 'production')",
        {"version": version, "now": now or datetime.now(UTC)})
    return get_version(warehouse, version)


def rollback(warehouse: Warehouse, kind: str = "style", now: datetime | None = None) -> dict:
    """Restore the version the current production replaced; returns the new production row."""
    current = production_version(warehouse, kind)
    if current is None:
        raise RegistryError(f"no {kind} version is in production: nothing to roll back")
    previous = current.get("previous_version")
    if not previous or get_version(warehouse, previous) is None:
        raise RegistryError(f"{current['version']} replaced no earlier {kind} version: nothing to roll back to")
    warehouse.execute(
        """
        UPDATE model_versions SET
          alias = CASE WHEN version = @previous THEN 'production' ELSE 'archived' END,
          status = CASE WHEN version = @previous THEN 'promoted' ELSE 'rolled_back' END,
          promoted_at = CASE WHEN version = @previous THEN @now ELSE promoted_at END,
          updated_at = @now
        WHERE kind = @kind AND version IN (@previous, @current)
        """,
        {"previous": previous, "current": current["version"], "kind": kind, "now": now or datetime.now(UTC)},
    )
    return get_version(warehouse, previous)


def list_all(warehouse: Warehouse, kind: str | None = None) -> list[dict]:
    """Every version (of ``kind``, or of all kinds), oldest first."""
    where, params = ("WHERE kind = @kind", {"kind": kind}) if kind else ("", {})
    rows = warehouse.query(f"SELECT * FROM model_versions {where} ORDER BY kind, created_at, version", params)
    return [_decode(r) for r in rows]


def _when(value) -> str:
    """A registry timestamp as recorded (UTC), never relative to the viewer's clock."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


def gate_numbers(metrics: dict) -> str:
    """The gate's key numbers: the new model's validation loss against the champion's."""
    try:
        new, old = float(metrics["challenger"]["val_loss"]), float(metrics["champion"]["val_loss"])
    except (KeyError, TypeError, ValueError):
        loss = metrics.get("final_loss")
        return f"final loss {loss:.4g}" if isinstance(loss, int | float) else "-"
    change = f" ({100 * (new - old) / old:+.1f} %)" if old else ""
    return f"val loss {new:.5g} vs {old:.5g}{change}"


SHOW_COLUMNS = ("VERSION", "KIND", "ALIAS", "STATUS", "CREATED (UTC)", "PROMOTED (UTC)", "GATE", "ADAPTER")


def show_table(rows: list[dict]) -> str:
    table = [SHOW_COLUMNS] + [(r["version"], r["kind"] or "-", r["alias"] or "-", r["status"] or "-",
                               _when(r["created_at"]), _when(r.get("promoted_at")), gate_numbers(r["metrics"]),
                               r["adapter_uri"] or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(SHOW_COLUMNS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                     for row in table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sleeve.registry", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["show", "rollback"])
    parser.add_argument("--kind", default=None,
                        help="show: only this kind (style, dreambooth; default all); rollback: default style")
    args = parser.parse_args(argv)
    from sleeve.settings import SettingsError

    try:
        warehouse = open_warehouse()
        warehouse.migrate()
        if args.command == "rollback":
            row = rollback(warehouse, args.kind or "style")
            print(f"{args.kind or 'style'} production is now {row['version']} ({row['adapter_uri']})")
        else:
            rows = list_all(warehouse, args.kind)
            print(show_table(rows) if rows else f"no {args.kind or ''} model versions registered yet".replace("  ", " "))
    except (RegistryError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, RegistryError) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
