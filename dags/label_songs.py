"""
### label_songs: crawled songs -> English visual labels -> versioned SDXL prompts

`select` → `label` → `record` (publishes the **prompts** Asset).

- **Trigger**: every update of the songs Asset (by `crawl_songs`), or by hand with Params.
- **select**: songs to consider (all, `song_ids`, or updated `since`); a song whose input hash
  is unchanged for this labeller version is skipped; a missing prompt at the current prompt
  version is rebuilt from stored labels without relabelling.
- **label**: the offline rule-based labeller (default, `SLEEVE_LABELLER=offline`) or an
  OpenAI-compatible LLM (connection `sleeve_llm`; cached answers, offline fallback with the
  reason recorded). Labels and prompts are upserted per (song, labeller version, prompt version).
- **record**: a `stage_runs` row (stage `label`) with songs/labelled/skipped/llm/offline/
  fallbacks/tokens/cache hits, keyed by the run's data interval.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from sleeve_airflow.assets import PROMPTS, SONGS
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE

CHUNK = 100  # songs labelled and stored per step: a failure keeps what is done


@dag(
    dag_id="label_songs",
    schedule=[SONGS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["sleeve", "labelling"],
    doc_md=__doc__,
    params={
        "relabel_all": Param(False, type="boolean", description="Relabel even unchanged songs."),
        "since": Param(None, type=["null", "string"], format="date-time",
                       description="Only songs updated at or after this time (ISO 8601)."),
        "song_ids": Param([], type="array", items={"type": "string"}, description="Only these songs."),
        "labeller": Param("", type="string", enum=["", "offline", "llm"],
                          description="Override SLEEVE_LABELLER for this run ('' = configured)."),
    },
)
def label_songs():
    @task(multiple_outputs=False)
    def select(**context) -> dict:
        """The songs to (re)label and those whose prompt only needs rebuilding."""
        from sleeve_airflow.context import mark_stage_start, param_datetime
        from sleeve_airflow.hooks import WarehouseHook
        from sleeve_airflow.llm import LLMHook
        from sleeve_airflow.preflight import preflight

        from inference.labels import load_songs, plan
        from inference.prompts import PROMPT_VERSION

        preflight("warehouse", "store", "labeller")
        mark_stage_start(context)
        params, warehouse = context["params"], WarehouseHook().warehouse
        songs = load_songs(warehouse, song_ids=params.get("song_ids") or None, since=param_datetime(context, "since"))
        version = LLMHook().labeller(params.get("labeller") or None).version
        todo = plan(warehouse, songs, version, PROMPT_VERSION, relabel_all=bool(params.get("relabel_all")))
        return {"labeller": params.get("labeller") or None, "labeller_version": version, "songs": len(songs),
                "label": todo.label, "prompt_only": todo.prompt_only, "skipped": len(todo.skipped)}

    @task(multiple_outputs=False)
    def label(todo: dict, **context) -> dict:
        """Label in chunks (each stored as it is done) and rebuild the prompt-only ones."""
        from sleeve_airflow.context import data_interval
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook
        from sleeve_airflow.llm import LLMHook

        from inference.labels import corpus_texts, load_songs, store_results, stored_labels, usage_stats

        _, end = data_interval(context)
        warehouse, store = WarehouseHook().warehouse, ObjectStoreHook().store
        labeller = LLMHook().labeller(todo["labeller"], cache=store, corpus=corpus_texts(warehouse))
        results = []
        for i in range(0, len(todo["label"]), CHUNK):
            chunk = labeller.label_batch(load_songs(warehouse, song_ids=todo["label"][i:i + CHUNK]))
            store_results(warehouse, chunk, end)
            results += chunk
        rebuilt = store_results(warehouse, stored_labels(warehouse, todo["prompt_only"], todo["labeller_version"]),
                                end, with_labels=False)
        return {"songs": todo["songs"], "skipped": todo["skipped"], "prompts_rebuilt": rebuilt,
                **usage_stats(results)}

    @task(multiple_outputs=False, outlets=[PROMPTS])
    def record(stats: dict, **context) -> dict:
        """The run's stage_runs row; publishes the prompts Asset."""
        import pendulum
        from sleeve_airflow.context import data_interval, stage_started_at
        from sleeve_airflow.hooks import WarehouseHook

        from sleeve.stages import record_stage, recorded_stats

        start, end = data_interval(context)
        warehouse = WarehouseHook().warehouse
        done = recorded_stats(warehouse, "label_songs", "label", start)
        if done and not (stats["labelled"] or stats["prompts_rebuilt"]):
            return done  # a re-run that found nothing to do keeps the run's record
        record_stage(warehouse, "label_songs", "label", (start, end), run_id=context["run_id"], status="success",
                     stats=stats, started_at=stage_started_at(context, "select"), finished_at=pendulum.now("UTC"))
        return stats

    record(label(select()))


label_songs()
