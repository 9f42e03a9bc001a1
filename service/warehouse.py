"""The warehouse as the web service uses it: never blocking a request for long.

BigQuery (production) takes many writers: the configured warehouse is used as it is.

The embedded DuckDB file takes one process at a time, and opening it costs ~60 ms (measured on
the 2-core box), more than a page may take. So the service keeps the file open between calls
(one anchor connection; every call gets its own short-lived cursor, never held across a
request) and lets go of it whenever another process (a DAG task, the demo) announces it is
waiting (``sleeve.warehouse.duckdb_backend.others_waiting``) or nothing has asked for a while.
A call waits at most ``SLEEVE_SERVICE_DB_WAIT_S`` for the file, then raises :class:`WarehouseBusy`,
which the app answers with 503 and ``Retry-After``. The service's own writes are serialised: a
DuckDB MERGE does not guard a key against a concurrent insert of the same key.
"""

from __future__ import annotations

import threading
import time

import duckdb

from sleeve.settings import Settings
from sleeve.warehouse import Warehouse, open_warehouse
from sleeve.warehouse.duckdb_backend import DuckDBWarehouse, others_waiting

RETRY_AFTER_S = 2


class WarehouseBusy(RuntimeError):
    """The warehouse stayed locked by another process for longer than a request may wait."""

    retry_after_s = RETRY_AFTER_S


class _Lease:
    """One call's cursor on the anchor; closing it ends the call."""

    def __init__(self, gate: SharedDuckDB, cursor: duckdb.DuckDBPyConnection):
        self.gate, self.cursor = gate, cursor

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.cursor

    def __exit__(self, *exc) -> None:
        try:
            self.cursor.close()
        finally:
            self.gate._release()


class SharedDuckDB(DuckDBWarehouse):
    """A DuckDB warehouse that keeps the file open for its process while in use and yields it
    to any other process that waits for it (see the module docstring)."""

    def __init__(self, path, *, wait_s: float, idle_s: float = 1.0, check_s: float = 0.05,
                 max_gap_s: float = 2.0):
        super().__init__(path, lock_timeout_s=wait_s)
        self.idle_s, self.check_s, self.max_gap_s = idle_s, check_s, max_gap_s
        self._state = threading.Condition()
        self._anchor: duckdb.DuckDBPyConnection | None = None
        self._opening = self._yielding = False
        self._users = 0
        self._last_used = time.monotonic()
        self._writes = threading.Lock()
        self._stopped = threading.Event()
        self.yields = 0  # times the file was handed to another process (for tests and /healthz)
        self._janitor = threading.Thread(target=self._watch, name="warehouse-yield", daemon=True)
        self._janitor.start()

    # --- calls ---------------------------------------------------------------------------
    def _connect(self, timeout_s: float | None = None) -> _Lease:
        deadline = time.monotonic() + (self.lock_timeout_s if timeout_s is None else timeout_s)
        while True:
            with self._state:
                while not (self._anchor is not None and not self._yielding) and not (
                        self._anchor is None and not self._yielding and not self._opening):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WarehouseBusy("the warehouse is busy with another process; retry shortly")
                    self._state.wait(remaining)
                if self._anchor is not None:
                    self._users += 1
                    self._last_used = time.monotonic()
                    try:
                        return _Lease(self, self._anchor.cursor())
                    except BaseException:
                        self._users -= 1
                        raise
                self._opening = True
            anchor = None
            try:
                anchor = super()._connect(max(0.0, deadline - time.monotonic()))
                anchor.execute("SET GLOBAL TimeZone = 'UTC'")  # cursors do not inherit session settings
            except duckdb.IOException as exc:
                if "lock" in str(exc).lower():
                    raise WarehouseBusy("the warehouse is busy with another process; retry shortly") from None
                raise
            finally:
                with self._state:
                    self._opening = False
                    self._anchor = anchor
                    self._last_used = time.monotonic()
                    self._state.notify_all()

    def _release(self) -> None:
        with self._state:
            self._users -= 1
            self._last_used = time.monotonic()
            self._state.notify_all()

    def execute(self, sql, params=None):
        with self._writing():
            super().execute(sql, params)

    def _merge(self, table, rows, columns, key):
        with self._writing():
            super()._merge(table, rows, columns, key)

    def _writing(self):
        lock = self._writes

        class _Held:
            def __enter__(inner):
                if not lock.acquire(timeout=self.lock_timeout_s):
                    raise WarehouseBusy("the warehouse is busy writing; retry shortly")

            def __exit__(inner, *exc):
                lock.release()

        return _Held()

    # --- yielding the file ---------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stopped.wait(self.check_s):
            with self._state:
                if self._anchor is None or self._yielding:
                    continue
                idle = self._users == 0 and time.monotonic() - self._last_used > self.idle_s
            waited = not idle and others_waiting(self.path)
            if idle or waited:
                self._let_go(hand_over=waited)

    def _let_go(self, *, hand_over: bool) -> None:
        """Close the anchor once the calls in flight end; when another process waits, keep new
        calls back until it has the file (or ``max_gap_s`` passed)."""
        with self._state:
            if hand_over:
                self._yielding = True
            elif self._users:
                return
            while self._users:
                self._state.wait(self.check_s)
            anchor, self._anchor = self._anchor, None
        if anchor is not None:
            anchor.close()
        if hand_over:
            self.yields += 1
            gap_end = time.monotonic() + self.max_gap_s
            while others_waiting(self.path) and time.monotonic() < gap_end:
                time.sleep(0.01)
        with self._state:
            self._yielding = False
            self._state.notify_all()

    def close(self) -> None:
        """Stop watching and close the file (at shutdown)."""
        self._stopped.set()
        self._janitor.join(timeout=2)
        self._let_go(hand_over=False)


def service_warehouse(settings: Settings) -> Warehouse:
    if settings.warehouse == "duckdb":
        return SharedDuckDB(settings.warehouse_path, wait_s=settings.service_db_wait_s)
    return open_warehouse(settings)
