"""
### weekly_report

The week in numbers, posted once per week: **retraining_settled** (check the settings; a
scheduled run waits for that week's retraining) → **gather** what every stage recorded in the
warehouse for the data interval (the reported week) → **deliver** it as a Slack Block Kit message
with the rating trend, the rating distribution and a grid of the top covers, or (embedded
default) as Markdown, Block Kit JSON and PNGs in `$SLEEVE_HOME/outbox/weekly_report/<week_start>/`.

* Outbox first: the report is written to the outbox and its `reports` row marked pending before
  it is posted, and marked delivered after; a Slack outage delays it, never loses it (the next
  delivery sends what is pending, and pending failure alerts too).
* Exactly once per week: the Slack message `ts` is kept in `reports`; re-running a week
  updates that message (`chat.update`) instead of posting again. Deliveries run one at a time.
* The same text for the same week: the report reads only what stage re-runs leave as it was.
* Backfill-safe: each run reports its own data interval; a backfill over N weeks gives N reports.
  Runs of different weeks (a catch-up run, a manual run) do not wait for each other.
* Trigger by hand for a given week with the `week_start` param (any date in the week: the
  weekly schedule's interval that holds it). Manual runs and backfills report at once.
* `weekly_retrain` starts at the same time: a scheduled run first waits (up to 6 h, freeing its
  worker slot between checks) for that week's training run to settle, so the report shows the
  gate's decision; it does not wait when `weekly_retrain` is paused or has no run for that week
  queued, running or still to come. If the wait times out, the report goes out with what it found.
* Transport: `SLEEVE_NOTIFIER=slack` + connection `sleeve_slack` (bot token or webhook URL).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, weekly_interval

RETRAIN_DAG_ID = "weekly_retrain"


@dag(
    dag_id="weekly_report",
    schedule=weekly_interval(),
    start_date=START_DATE,
    catchup=False,
    default_args=DEFAULT_ARGS,
    params={
        "week_start": Param(None, type=["null", "string"],
                            description="Report this week instead of the data interval (any date in it, YYYY-MM-DD)"),
        "top_covers": Param(8, type="integer", minimum=1, maximum=20, description="Covers in the grid"),
        "top_min_reviews": Param(2, type="integer", minimum=1,
                                 description="Reviews a cover needs to be ranked among the top covers"),
        "trend_weeks": Param(8, type="integer", minimum=2, maximum=52, description="Weeks in the rating trend"),
    },
    tags=["sleeve", "report", "slack"],
    doc_md=__doc__,
)
def weekly_report():
    @task.sensor(poke_interval=timedelta(minutes=10), timeout=timedelta(hours=6), mode="reschedule",
                 soft_fail=True)
    def retraining_settled(**context) -> bool:
        """Settings first. Then true once the reported week's style training run has ended, or
        when there is no retraining to wait for. Manual runs and backfills do not wait."""
        import logging

        from sleeve_airflow.context import dag_schedule_state, interval
        from sleeve_airflow.hooks import WarehouseHook
        from sleeve_airflow.preflight import preflight

        from sleeve.report import retraining_settled as settled
        from sleeve.report import retraining_to_wait_for

        preflight("warehouse", "store", "notifier")
        if context["dag_run"].run_type != "scheduled":
            return True
        start = interval(context, "week_start")[0]
        if settled(WarehouseHook().warehouse, start):
            return True
        waiting = retraining_to_wait_for(**dag_schedule_state(context, RETRAIN_DAG_ID, start), week_start=start)
        logging.getLogger(__name__).info("week %s: %s", start.date(), waiting or "no retraining to wait for")
        return waiting is None

    @task(multiple_outputs=False, trigger_rule="none_failed")  # a timed-out (skipped) sensor still lets the report go
    def gather(**context) -> dict:
        """The week's numbers from the warehouse (JSON, small enough for XCom)."""
        from sleeve_airflow.context import interval
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.report import build_report

        start, end = interval(context, "week_start")
        params = context["params"]
        return build_report(WarehouseHook().warehouse, start, end, top=params["top_covers"],
                            min_reviews=params["top_min_reviews"], trend_weeks=params["trend_weeks"],
                            store=ObjectStoreHook().store)

    @task(multiple_outputs=False, max_active_tis_per_dag=1)  # one delivery at a time: a week never posts twice
    def deliver(report: dict) -> dict:
        """Render the charts, cover grid, Markdown and blocks; outbox first, then send once per week
        (with whatever earlier report or alert is still pending)."""
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook
        from sleeve_airflow.notifier import open_sender

        from sleeve.delivery import Outbox, deliver_report
        from sleeve.report_render import render
        from sleeve.settings import get_settings
        from sleeve.store import open_uri

        store = ObjectStoreHook().store

        def load(uri: str) -> bytes:  # a key in the configured store, or a URI read through it
            source, key = open_uri(uri, store) if "://" in uri else (store, uri)
            return source.get_bytes(key)

        row = deliver_report(WarehouseHook().warehouse, Outbox(get_settings().outbox_dir), open_sender(),
                             render(report, load), report)
        return {k: str(v) for k, v in row.items() if k != "summary"}

    settled = retraining_settled()
    report = gather()
    settled >> report
    deliver(report)


weekly_report()
