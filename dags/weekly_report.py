"""
### weekly_report

The week in numbers, posted once per week: **gather** what every stage recorded in the warehouse
for the data interval (the reported week) → **deliver** it as a Slack Block Kit message with a
rating chart and a grid of the top-rated covers, or (embedded default) as Markdown, Block Kit
JSON and PNGs in `$SLEEVE_HOME/outbox/weekly_report/<week_start>/`.

* Backfill-safe: each run reports its own data interval; a backfill over N weeks gives N reports.
* Exactly once per week: the Slack message `ts` is kept in `reports`; re-running a week
  updates that message (`chat.update`) instead of posting again.
* Trigger by hand for a given week with the `week_start` param (any date in the week: the
  weekly schedule's interval that holds it).
* Transport: `SLEEVE_NOTIFIER=slack` + connection `sleeve_slack` (bot token or webhook URL).
* `weekly_retrain` starts at the same time: a scheduled run first waits (up to 6 h, freeing its
  worker slot between checks) for that week's training run to settle, so the report shows the
  gate's decision; if it never does, the report goes out anyway and says what it found.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, weekly_interval


@dag(
    dag_id="weekly_report",
    schedule=weekly_interval(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # two runs of the same week must not both post
    default_args=DEFAULT_ARGS,
    params={
        "week_start": Param(None, type=["null", "string"],
                            description="Report this week instead of the data interval (any date in it, YYYY-MM-DD)"),
        "top_covers": Param(8, type="integer", minimum=1, maximum=20, description="Covers in the grid"),
    },
    tags=["sleeve", "report", "slack"],
    doc_md=__doc__,
)
def weekly_report():
    @task.sensor(poke_interval=timedelta(minutes=10), timeout=timedelta(hours=6), mode="reschedule",
                 soft_fail=True)
    def retraining_settled(**context) -> bool:
        """True once the reported week's style training run has ended (trained/skipped/failed).
        Manual runs and backfills report what is there without waiting."""
        from sleeve_airflow.context import interval
        from sleeve_airflow.hooks import WarehouseHook

        from sleeve.report import retraining_settled as settled

        if context["dag_run"].run_type != "scheduled":
            return True
        return settled(WarehouseHook().warehouse, interval(context, "week_start")[0])

    @task(multiple_outputs=False, trigger_rule="none_failed")  # a timed-out (skipped) sensor still lets the report go
    def gather(**context) -> dict:
        """The week's numbers from the warehouse (JSON, small enough for XCom)."""
        from sleeve_airflow.context import interval
        from sleeve_airflow.hooks import WarehouseHook

        from sleeve.report import build_report

        start, end = interval(context, "week_start")
        return build_report(WarehouseHook().warehouse, start, end, top=context["params"]["top_covers"])

    @task(multiple_outputs=False)
    def deliver(report: dict) -> dict:
        """Render chart, cover grid, Markdown and blocks; send them once per week."""
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook
        from sleeve_airflow.notifier import open_sender

        from sleeve.delivery import deliver_report
        from sleeve.report_render import render
        from sleeve.store import open_uri

        store = ObjectStoreHook().store

        def load(uri: str) -> bytes:  # a key in the configured store, or a URI read through it
            source, key = open_uri(uri, store) if "://" in uri else (store, uri)
            return source.get_bytes(key)

        row = deliver_report(WarehouseHook().warehouse, open_sender(), render(report, load), report)
        return {k: str(v) for k, v in row.items() if k != "summary"}

    retraining_settled() >> deliver(gather())


weekly_report()
