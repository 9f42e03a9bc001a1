"""`make simulate`: simulated users with hidden tastes drive Sleeve's weekly loop for N weeks.

    python -m simulation.run [--weeks 6] [--taste simulation/tastes/default.json]
                             [--strategies none,seed,sleeve] [--sabotaged-week 3] [--jobs 2]

One run: the catalogue is crawled and labelled once through the real ``crawl_songs`` and
``label_songs`` DAGs; then every strategy (:mod:`simulation.strategies`) starts from a copy of
that world (its own ``SLEEVE_HOME`` and Airflow metadata DB, under
``$SLEEVE_HOME/simulation/<strategy>``) with the same base model and the same users, and lives
N weeks. Each week the users ask for covers (:mod:`simulation.client`), ``batch_generate``
renders them with whatever is in production, the users rate their covers 1-5 from their hidden
tastes, and ``weekly_retrain`` snapshots, trains, evaluates, gates and registers. In the
sabotaged week the review intake inverts every rating (6 - stars), as a bug there would.

The yardstick is a fixed held-out set of prompts and seeds no user ever requests: after every
week each strategy's production model renders it and every user rates every cover. Written to
``$SLEEVE_HOME/simulation.json``::

    {"weeks": N, "taste": name, "sabotaged_week": k,
     "strategies": {name: {"mean_rating": [week 0 .. week N], "share_4plus": [...],
                           "promotions": [bool per week], "gate_reasons": [[...] per week]}}}

with ``simulation.png`` (the chart) beside it, and the details (versions, the users' own
ratings per week, contact sheets of the held-out covers, timings) under ``simulation/``.
Strategies run in parallel worker processes (``--jobs``); each worker is this module with
``--worker``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from simulation.strategies import DEFAULT_STRATEGIES, STRATEGIES
from simulation.taste import DEFAULT_TASTE, Taste

START = datetime.fromisoformat("2027-01-04T03:00:00+00:00")  # a Monday 03:00 UTC: weekly_retrain's boundary
# What every retraining strategy asks of weekly_retrain beyond its strategy's own conf: nothing,
# so `sleeve` is weekly_retrain's defaults (tests shorten the training here).
RETRAIN: dict = {}
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Plan:
    """Everything a strategy worker needs, written once as JSON, so all workers agree."""

    weeks: int = 6
    taste: str = str(DEFAULT_TASTE)
    sabotaged_week: int | None = 3
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    users: int | None = None  # None: the taste file's count
    activity: float = 1.0  # share of users asking for covers in a week
    heldout_prompts: int = 24
    heldout_seeds: int = 2
    retrain: dict = field(default_factory=lambda: dict(RETRAIN))  # weekly_retrain conf, every retraining strategy
    generate: dict = field(default_factory=lambda: {"shard_size": 64})  # batch_generate conf
    base_model: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(**data)


def week_start(week: int) -> datetime:
    return START + timedelta(days=7 * (week - 1))


# ---------------------------------------------------------------- worker (one strategy)

def _week_bounds(week: int) -> tuple[datetime, datetime, datetime]:
    """(start, the Saturday 02:00 batch_generate run that renders the week's requests, end)."""
    start = week_start(week)
    return start, start + timedelta(days=4, hours=23), start + timedelta(days=7)


def _production(warehouse) -> dict | None:
    from sleeve.registry import production_version

    return production_version(warehouse, "style")


class HeldOutJudge:
    """Renders the held-out set with a model version (once per version) and has it judged."""

    def __init__(self, plan: Plan, population, settings, out_dir: Path, exclude: set[str]):
        from simulation.users import heldout_set

        self.plan, self.population, self.settings, self.out_dir = plan, population, settings, out_dir
        self.items = heldout_set(plan.heldout_prompts, plan.heldout_seeds, exclude)
        self.cache: dict[str, dict] = {}

    def __call__(self, production: dict | None, label: str) -> dict:
        version = production["version"] if production else "base"
        if version not in self.cache:
            images = self.render(production)
            self.cache[version] = {"version": version, **self._judge(images)}
            self._sheet(images, self.out_dir / f"heldout-{label}.png")
        return self.cache[version]

    def _judge(self, images) -> dict:
        from simulation.users import judge

        return judge(self.population, images, self.items)

    def render(self, production: dict | None) -> list:
        from inference.generator import Adapter, CoverGenerator, Defaults, Request, chunks, expand

        adapters = [Adapter(production["adapter_uri"])] if production and production.get("adapter_uri") else []
        generator = CoverGenerator(
            production["base_model"] if production else self.settings.base_model, adapters,
            model_version=production["version"] if production else "base",
            defaults=Defaults(width=self.settings.gen_size, height=self.settings.gen_size,
                              steps=self.settings.gen_steps),
            cache_dir=self.settings.home / "cache" / "adapters", store_url=self.settings.store_url)
        images = []
        for n in range(0, len(self.items), self.plan.heldout_seeds):
            item = self.items[n]
            request = Request(request_id=item.key.rsplit("-", 1)[0], prompt=item.prompt,
                              negative_prompt=item.negative, num_images=self.plan.heldout_seeds)
            for chunk in chunks(expand(request, generator.defaults)):  # one request per forward pass
                images += generator.render(chunk)
        return images

    def _sheet(self, images, path: Path) -> None:
        from PIL import Image

        cols = self.plan.heldout_seeds
        rows = len(images) // cols
        size = images[0].width
        sheet = Image.new("RGB", (cols * size, rows * size))
        for n, image in enumerate(images):
            sheet.paste(image, ((n % cols) * size, (n // cols) * size))
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)


def _retrain_outcome(warehouse, start: datetime) -> dict:
    rows = warehouse.query("SELECT status, reason, decision, decision_reasons, model_version FROM training_runs "
                           "WHERE kind = 'style' AND interval_start = @start", {"start": start})
    if not rows:
        return {"status": None, "decision": None, "reasons": ["no training run recorded"], "version": None}
    row = rows[0]
    reasons = json.loads(row["decision_reasons"]) if row["decision_reasons"] else [row["reason"] or row["status"]]
    return {"status": row["status"], "decision": row["decision"], "reasons": reasons, "version": row["model_version"]}


def run_strategy(name: str, plan: Plan, log=print) -> dict:
    """One strategy for ``plan.weeks`` weeks in the current ``SLEEVE_HOME`` (a copy of the
    world). Returns its series and details."""
    from airflow.dag_processing.dagbag import DagBag
    from sleeve_airflow.demo import run_dag

    from simulation.client import ApiClient
    from simulation.taste import Features
    from simulation.users import IMAGES_PER_REQUEST, Population, unit
    from sleeve import registry
    from sleeve.jobs import configure_cpu_threads
    from sleeve.settings import get_settings
    from sleeve.warehouse import open_warehouse
    from training.dataset import decode_image

    strategy = STRATEGIES[name]
    configure_cpu_threads()  # the held-out renders run in this process
    settings = get_settings()
    warehouse = open_warehouse(settings)
    taste = Taste.load(plan.taste)
    population = Population.of(taste, plan.users)
    client = ApiClient(settings, warehouse)
    ids = client.sign_up(population.names, START - timedelta(days=1))
    songs = client.songs()
    if not songs:
        raise RuntimeError("the world has no prompts to request covers of: crawl_songs/label_songs found nothing")
    judge = HeldOutJudge(plan, population, settings, settings.home / "heldout", {s["prompt"] for s in songs})
    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    if dagbag.import_errors:
        raise RuntimeError(f"DAG import errors: {dagbag.import_errors}")

    started = time.perf_counter()
    first = judge(_production(warehouse), "week-0")
    series = {"mean_rating": [first["mean_rating"]], "share_4plus": [first["share_4plus"]], "promotions": [],
              "gate_reasons": []}
    details = {"versions": [first["version"]], "own_ratings": [], "requests": [], "decisions": [], "seconds": []}
    log(f"[{name}] week 0: held-out mean {first['mean_rating']:.3f}, share >= 4 {first['share_4plus']:.3f}")
    for week in range(1, plan.weeks + 1):
        week_started = time.perf_counter()
        if strategy.retrain is None:  # nothing a user does can change this strategy's model
            for key in ("mean_rating", "share_4plus"):
                series[key].append(series[key][-1])
            series["promotions"].append(False)
            series["gate_reasons"].append(["no retraining"])
            details["versions"].append(details["versions"][-1])
            continue
        start, render_at, end = _week_bounds(week)
        requests = population.requests(week, start, songs, plan.activity)
        for user, song, at in requests:
            client.request_covers(ids[user.name], song, IMAGES_PER_REQUEST, at)
        run_dag(dagbag, "batch_generate", render_at, conf={**plan.generate, **strategy.generate})
        sabotaged = week == plan.sabotaged_week
        reviews, honest = [], []
        for user in population.users:
            for cover in client.my_covers(ids[user.name], start, end):
                features = Features.of(decode_image(client.image_bytes(cover["uri"])))
                stars = user.rate(features, cover["prompt"] or "", cover["image_id"])
                honest.append(stars)
                at = render_at + timedelta(hours=1 + 39 * unit("review", user.name, cover["image_id"]))
                reviews.append({"image_id": cover["image_id"], "user_id": ids[user.name],
                                "rating": 6 - stars if sabotaged else stars, "created_at": at})
        outcome = client.reviews(reviews)
        if outcome["rejected"]:
            raise RuntimeError(f"week {week}: reviews rejected: {outcome['rejected'][:3]}")
        before = _production(warehouse)
        run_dag(dagbag, "weekly_retrain", end, conf={**plan.retrain, **strategy.retrain})
        result = _retrain_outcome(warehouse, start)
        reasons = list(result["reasons"])
        if strategy.promote_always and result["decision"] == "keep" and result["version"]:
            registry.promote(warehouse, result["version"], end)
            reasons.append("promoted anyway: this strategy promotes every trained model")
        after = _production(warehouse)
        promoted = (after or {}).get("version") != (before or {}).get("version")
        scored = judge(after, f"week-{week}")
        series["mean_rating"].append(scored["mean_rating"])
        series["share_4plus"].append(scored["share_4plus"])
        series["promotions"].append(promoted)
        series["gate_reasons"].append(reasons)
        details["versions"].append(scored["version"])
        details["own_ratings"].append(round(sum(honest) / len(honest), 4) if honest else None)
        details["requests"].append(len(requests))
        details["decisions"].append(result["decision"])
        details["seconds"].append(round(time.perf_counter() - week_started, 1))
        log(f"[{name}] week {week}{' (sabotaged)' if sabotaged else ''}: {len(requests)} requests, "
            f"own covers {details['own_ratings'][-1]}, gate {result['decision']}, "
            f"{'promoted' if promoted else 'kept'} {scored['version']}; held-out mean {scored['mean_rating']:.3f}, "
            f"share >= 4 {scored['share_4plus']:.3f} ({details['seconds'][-1]:.0f} s)")
    details["wall_seconds"] = round(time.perf_counter() - started, 1)
    return {"series": series, "details": details}


def worker_main(name: str, plan_path: Path) -> int:
    """Entry of a worker process: SLEEVE_HOME and AIRFLOW_HOME are already this strategy's. Its
    GPU jobs run on a warm job server of its own (the demo's), not as fresh processes."""
    from sleeve_airflow.demo import quiet_airflow_logs, warm_job_server

    from sleeve.settings import get_settings

    plan = Plan.from_dict(json.loads(plan_path.read_text()))
    home = get_settings().home
    quiet_airflow_logs(home / "simulation.log")
    say = _stdout_logger()
    import contextlib

    with open(home / "simulation.log", "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        if name == "world":
            build_world(say)
            return 0
        with warm_job_server(get_settings()):
            result = run_strategy(name, plan, log=say)
    (home / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _stdout_logger():
    def say(message: str) -> None:
        sys.__stdout__.write(message + "\n")
        sys.__stdout__.flush()
    return say


def build_world(log=print) -> None:
    """The catalogue every strategy starts from: crawl_songs and label_songs, run once."""
    from airflow.dag_processing.dagbag import DagBag
    from sleeve_airflow.demo import run_dag

    from sleeve.settings import get_settings
    from sleeve.warehouse import open_warehouse

    settings = get_settings()
    settings.ensure_dirs()
    open_warehouse(settings).migrate()
    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    run_dag(dagbag, "crawl_songs", START)
    run_dag(dagbag, "label_songs", START - timedelta(days=4))
    log(f"[world] {open_warehouse(settings).count('prompts')} prompts to request covers of")


# ---------------------------------------------------------------- coordinator

def _worker_env(home: Path, base_model: str = "") -> dict:
    env = {**os.environ, "SLEEVE_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"), "PYTHONUNBUFFERED": "1"}
    if base_model:  # every strategy starts from the same base model
        env["SLEEVE_BASE_MODEL"] = base_model
    return env


def _prepare_airflow(home: Path, template: Path | None) -> None:
    """Each worker gets its own Airflow metadata DB: a copy of a migrated one, or a fresh one."""
    target = home / "airflow"
    target.mkdir(parents=True, exist_ok=True)
    if template and template.is_file():
        shutil.copy2(template, target / "airflow.db")
    else:
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=_worker_env(home),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _copy_world(world: Path, home: Path) -> None:
    home.mkdir(parents=True)
    for name in ("warehouse.duckdb", "store", "outbox"):
        source = world / name
        if source.is_dir():
            shutil.copytree(source, home / name)
        elif source.is_file():
            shutil.copy2(source, home / name)
    shutil.copytree(world / "airflow", home / "airflow", ignore=shutil.ignore_patterns("logs"))


def _spawn(name: str, home: Path, plan: Plan, plan_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "simulation.run", "--worker", name, "--plan", str(plan_path)],
                            env=_worker_env(home, plan.base_model), cwd=REPO)


def run(plan: Plan, home: Path, jobs: int = 2, log=print) -> dict:
    """Build the world, run every strategy (``jobs`` at a time) and write the results."""
    started = time.perf_counter()
    root = home / "simulation"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    plan_path = root / "plan.json"
    plan_path.write_text(json.dumps(asdict(plan), indent=2, sort_keys=True))
    template = Path(os.environ.get("AIRFLOW_HOME", home / "airflow")) / "airflow.db"
    world = root / "world"
    world.mkdir()
    _prepare_airflow(world, template)
    if _spawn("world", world, plan, plan_path).wait() != 0:
        raise RuntimeError(f"building the world failed; see {world / 'simulation.log'}")
    world_seconds = time.perf_counter() - started
    pending = list(plan.strategies)
    running: dict[str, subprocess.Popen] = {}
    failed = []
    while pending or running:
        while pending and len(running) < max(1, jobs):
            name = pending.pop(0)
            _copy_world(world, root / name)
            running[name] = _spawn(name, root / name, plan, plan_path)
        time.sleep(0.5)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode != 0:
                    failed.append(name)
    if failed:
        raise RuntimeError(f"strategies {failed} failed; see {root}/<strategy>/simulation.log")
    results = {name: json.loads((root / name / "result.json").read_text()) for name in plan.strategies}
    taste = Taste.load(plan.taste)
    output = {"weeks": plan.weeks, "taste": taste.name, "sabotaged_week": plan.sabotaged_week,
              "strategies": {name: results[name]["series"] for name in plan.strategies}}
    (home / "simulation.json").write_text(json.dumps(output, indent=2) + "\n")
    details = {"plan": asdict(plan), "world_seconds": round(world_seconds, 1),
               "wall_seconds": round(time.perf_counter() - started, 1),
               "strategies": {name: results[name]["details"] for name in plan.strategies}}
    (root / "details.json").write_text(json.dumps(details, indent=2) + "\n")
    from simulation.chart import draw_chart

    draw_chart(output, home / "simulation.png")
    log(summary(output, details))
    return output


def summary(output: dict, details: dict) -> str:
    weeks = output["weeks"]
    lines = [f"taste {output['taste']}, {weeks} weeks, sabotaged week {output['sabotaged_week']}; "
             f"wall {details['wall_seconds']:.0f} s (world {details['world_seconds']:.0f} s)",
             "strategy   " + " ".join(f"w{w:<5}" for w in range(weeks + 1)) + "  promotions"]
    for name, series in output["strategies"].items():
        marks = "".join("P" if p else "." for p in series["promotions"])
        lines.append(f"{name:<10} " + " ".join(f"{v:<6.3f}" for v in series["mean_rating"]) + f"  {marks}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weeks", type=int, default=6)
    parser.add_argument("--taste", default=str(DEFAULT_TASTE), help="taste file (JSON)")
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    parser.add_argument("--sabotaged-week", type=int, default=3, help="0: no sabotage")
    parser.add_argument("--users", type=int, default=None, help="default: the taste file's count")
    parser.add_argument("--jobs", type=int, default=2, help="strategies run at once")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.plan)
    from sleeve.settings import SettingsError, get_settings

    try:
        settings = get_settings()
        Taste.load(args.taste)
    except (SettingsError, ValueError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        print(f"simulate: unknown strategies {unknown}; known: {', '.join(STRATEGIES)}", file=sys.stderr)
        return 2
    if args.weeks < 1 or not 0 <= args.sabotaged_week <= args.weeks:
        print("simulate: --weeks must be >= 1 and --sabotaged-week between 0 and --weeks", file=sys.stderr)
        return 2
    plan = Plan(weeks=args.weeks, taste=str(Path(args.taste).resolve()), sabotaged_week=args.sabotaged_week or None,
                strategies=names, users=args.users, base_model=settings.base_model)
    print(f"Sleeve simulation: {plan.weeks} weeks, taste {args.taste}, strategies {', '.join(names)} "
          f"(SLEEVE_HOME={settings.home}; logs in {settings.home / 'simulation'}/<strategy>/simulation.log)")
    run(plan, settings.home, jobs=args.jobs)
    print(f"wrote {settings.home / 'simulation.json'} and {settings.home / 'simulation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
