"""Static checks of the production deployment (docker/): everything that can be verified without
a Docker engine. The compose file parses and references files that exist, the images' base tags
are pinned and their COPY sources, entrypoints and commands exist, the env template covers every
setting Sleeve reads and holds no secret. Building and running the stack needs Docker + an
NVIDIA GPU and is not done here (see docker/README.md)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = {"airflow": DOCKER / "Dockerfile.airflow", "gpu": DOCKER / "Dockerfile.gpu"}
ENTRYPOINT = DOCKER / "gpu-entrypoint.sh"
HEAVY = {"torch", "diffusers", "transformers", "peft", "accelerate", "opencv-python-headless"}
REQUIRED_SERVICES = {
    "postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-init", "airflow-worker", "airflow-gpu-worker",
}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|(?<![A-Z])TOKEN(?![A-Z])|API_KEY|FERNET_KEY|PII_KEY|WEBHOOK)")
# Shapes of real credentials; placeholders in the templates must not look like these.
SECRET_SHAPES = {
    "slack token": re.compile(r"xox[abposr]-[0-9A-Za-z-]{10,}"),
    "slack webhook": re.compile(r"hooks\.slack\.com/services/T[0-9A-Z]+/B[0-9A-Z]+/[0-9A-Za-z]+"),
    "openai key": re.compile(r"sk-[A-Za-z0-9_-]{20,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "aws key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "google api key": re.compile(r"AIza[0-9A-Za-z_-]{35}"),
    "hf token": re.compile(r"hf_[A-Za-z]{30,}"),
    "fernet key": re.compile(r"[A-Za-z0-9_-]{43}="),
}


# ------------------------------------------------------------------------------- helpers
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict:
    return compose()["services"]


def env_example() -> dict[str, str]:
    """NAME -> value of docker/.env.example, with commented-out `# NAME=` lines as ''."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values.setdefault(m.group(1), value if not line.lstrip().startswith("#") else "")
    return values


def interpolate(text: str) -> str:
    """Resolve compose `${VAR:-default}` / `${VAR:?msg}` / `${VAR}` with .env.example values."""
    env = env_example()

    def sub(m):
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        value = env.get(name, "")
        return value if value or op == ":?" or not op else arg

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", sub, text)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            lines.append(buf)
            buf = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def arg_defaults(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in instructions(path) if kind == "ARG" and "=" in a)


def base_image(path: Path) -> str:
    image = next(a for kind, a in instructions(path) if kind == "FROM").split()[0]
    return re.sub(r"\$\{?(\w+)\}?", lambda m: arg_defaults(path)[m.group(1)], image)


def copies(path: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY without --from (sources relative to the repo root)."""
    out = []
    for kind, args in instructions(path):
        if kind != "COPY" or "--from" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        out.append((parts[:-1], parts[-1]))
    return out


def exec_form(path: Path, name: str) -> list[str] | None:
    for kind, args in instructions(path):
        if kind == name:
            return json.loads(args)
    return None


def requirement_names(path: Path) -> dict[str, str]:
    """name -> full requirement line (lower-case name, extras dropped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out[re.split(r"[\[<>=!~ ;]", line, maxsplit=1)[0].lower().replace("_", "-")] = line
    return out


def sleeve_env_reads(paths) -> set[str]:
    """Every `"SLEEVE_..."` string constant in the given Python files: the env vars they read."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"SLEEVE_[A-Z0-9_]+", node.value):
                names.add(node.value)
    return names


# ------------------------------------------------------------------------------- compose
def test_compose_parses_and_has_every_service():
    missing = REQUIRED_SERVICES - set(services())
    assert not missing, f"docker-compose.yaml lacks services {sorted(missing)}"
    commands = {name: svc.get("command") for name, svc in services().items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker"] == "celery worker"  # default queue only


def test_airflow_services_use_celery_and_the_shared_settings():
    for name, svc in services().items():
        if not name.startswith("airflow-"):
            continue
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:") or "@redis:6379" in env[
            "AIRFLOW__CELERY__BROKER_URL"], name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/sleeve/dags", name
        assert {"path": ".env", "required": False} in svc["env_file"], name
        mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
        assert mounts.get("../dags") == "/opt/sleeve/dags", name
        assert mounts.get("../plugins") == "/opt/sleeve/plugins", name


def test_gpu_worker_serves_queue_gpu_with_an_nvidia_reservation():
    gpu = services()["airflow-gpu-worker"]
    cmd = gpu["command"]
    assert cmd[:2] == ["celery", "worker"]
    assert cmd[cmd.index("--queues") + 1] == "gpu", "the GPU worker must consume only queue gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count") for d in devices)
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    # The CPU worker must not steal GPU jobs.
    assert "gpu" not in str(services()["airflow-worker"]["command"])


def test_init_migrates_creates_admin_and_the_gpu_pool():
    init = services()["airflow-init"]
    script = init["command"][-1]
    assert "_AIRFLOW_DB_MIGRATE=true" in script and "_AIRFLOW_WWW_USER_CREATE=true" in script
    assert re.search(r"airflow pools set gpu \"\$\$\{SLEEVE_GPU_SLOTS:-1\}\"", script)
    assert init["environment"]["_AIRFLOW_WWW_USER_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    # Every Airflow command in the init script is a real Airflow CLI command.
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    airflow_cmds = [ln.split("airflow ", 1)[1] for ln in script.splitlines() if "/entrypoint airflow " in ln]
    assert len(airflow_cmds) >= 2
    for cmd in airflow_cmds:
        argv = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', cmd.replace("$${SLEEVE_GPU_SLOTS:-1}", "1"))]
        parser.parse_args(argv)  # SystemExit on an unknown command or bad arguments


def test_service_commands_are_airflow_commands():
    """Core commands are checked against Airflow's own CLI parser; `celery worker` comes from the
    Celery provider (not installed in this dev venv), so its pin in the GPU image is checked."""
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        parser.parse_args([services()[name]["command"]])
    for name in ("airflow-dag-processor", "airflow-triggerer"):
        check = services()[name]["healthcheck"]["test"][1]
        argv = check.replace('"$${HOSTNAME}"', "host").split()[1:]
        parser.parse_args(argv)
    assert "apache-airflow-providers-celery" in requirement_names(DOCKER / "requirements" / "airflow-celery.txt")


def test_visibility_timeout_outlasts_every_gpu_task(airflow_db, monkeypatch):
    """Celery re-delivers a task not acked within the visibility timeout: a GPU task that can
    run longer would start a second time. Every GPU task needs an execution_timeout below it."""
    raw = compose()["x-airflow-common"]["environment"]["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]
    visibility = int(interpolate(str(raw)))
    assert visibility >= 6 * 3600, "a LoRA training run takes hours; keep the visibility timeout above that"

    # Parse the DAGs as the compose stack does (GPU tasks routed to Celery queue gpu).
    from airflow.dag_processing.dagbag import DagBag

    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_GPU_EXECUTOR", "celery")
    get_settings.cache_clear()
    bag = DagBag(dag_folder=str(REPO / "dags"))  # import errors are tests/dags/test_integrity's job
    tasks = [(dag_id, t) for dag_id, dag in bag.dags.items() for t in dag.tasks]
    too_long = [f"{d}.{t.task_id}" for d, t in tasks
                if t.execution_timeout and t.execution_timeout.total_seconds() >= visibility]
    assert not too_long, f"execution_timeout >= Celery visibility timeout ({visibility}s): {too_long}"
    gpu_tasks = [(d, t) for d, t in tasks if t.queue == "gpu"]
    if not gpu_tasks:
        pytest.skip("no task on queue gpu in dags/ yet")
    unbounded = [f"{d}.{t.task_id}" for d, t in gpu_tasks if not t.execution_timeout]
    assert not unbounded, (f"GPU tasks without execution_timeout can outlive the Celery visibility timeout "
                           f"({visibility}s) and run twice: {unbounded}")


def test_every_path_the_compose_file_references_exists():
    for name, svc in services().items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO, f"{name}: build context must be the repository root"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: mounted path {source} missing"
            else:
                assert source in compose()["volumes"], f"{name}: named volume {source} not declared"
        for env_file in svc.get("env_file", []):
            entry = env_file if isinstance(env_file, dict) else {"path": env_file, "required": True}
            assert entry.get("required") is False or (DOCKER / entry["path"]).is_file(), f"{name}: {entry}"


def test_compose_holds_no_secret_values():
    """Secret-named settings are `${VAR:?...}` references to docker/.env, never literals."""
    for name, svc in list(services().items()) + [("x-airflow-common", compose()["x-airflow-common"])]:
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), f"{name}.{key} must come from .env"
    text = COMPOSE.read_text()
    for label, shape in SECRET_SHAPES.items():
        assert not shape.search(text), f"docker-compose.yaml contains a {label}"
    assert "airflow:airflow@" not in text, "the metadata DB password must come from POSTGRES_PASSWORD"


# ------------------------------------------------------------------------------- .env.example
def test_env_example_covers_every_setting_sleeve_reads():
    documented = set(env_example())
    settings_reads = sleeve_env_reads([REPO / "sleeve" / "settings.py"])
    assert {"SLEEVE_HOME", "SLEEVE_WAREHOUSE", "SLEEVE_GPU_SLOTS", "SLEEVE_PII_KEY"} <= settings_reads
    assert not settings_reads - documented, f".env.example lacks {sorted(settings_reads - documented)}"
    code = [p for d in ("sleeve", "plugins", "crawlers", "training", "inference", "dags")
            for p in (REPO / d).rglob("*.py")]
    everywhere = sleeve_env_reads(code)
    assert not everywhere - documented, f".env.example lacks {sorted(everywhere - documented)}"


def test_env_example_documents_every_compose_variable_and_connection():
    documented = env_example()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text()))  # `$${X}` is container-side
    assert not used - set(documented), f".env.example lacks {sorted(used - set(documented))}"
    for conn in ("AIRFLOW_CONN_SLEEVE_GCP", "AIRFLOW_CONN_SLEEVE_SLACK", "AIRFLOW_CONN_SLEEVE_LLM"):
        body = json.loads(documented[conn])  # Airflow's JSON connection format
        assert body["conn_type"], conn
        assert not body.get("password"), f"{conn} must not carry a password in the template"
    # Each variable line has a comment line right above it (or above its group).
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") or re.match(r"^[A-Z][A-Z0-9_]*=", above), f"undocumented: {line}"


def test_env_example_holds_no_secret():
    text = ENV_EXAMPLE.read_text()
    for label, shape in SECRET_SHAPES.items():
        assert not shape.search(text), f".env.example contains a {label}"
    for name, value in env_example().items():
        if SECRET_NAME.search(name):
            assert value == "", f"{name} in .env.example must be empty (a placeholder), not {value!r}"


def test_settings_accept_the_env_example():
    """The template's values pass Sleeve's own validation (placeholders filled with sample ones)."""
    from sleeve.settings import load_settings

    env = {k: v for k, v in env_example().items() if k.startswith("SLEEVE_")}
    env.update(SLEEVE_HOME="/tmp/sleeve-deploy-check", SLEEVE_PII_KEY="x")
    settings = load_settings(env)
    assert settings.warehouse == "bigquery" and settings.store_url.startswith("gs://")
    assert settings.gpu_executor == "celery" and settings.gpu_slots == 1


# ------------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_base_images_are_pinned(kind):
    image = base_image(DOCKERFILES[kind])
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{kind}: unpinned base {image}"
    if kind == "airflow":
        assert image == "apache/airflow:3.3.2-python3.11"
    for svc in ("postgres", "redis"):
        assert re.search(r":\d+\.\d+", services()[svc]["image"]), f"{svc} image unpinned"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_copy_sources_exist_and_pass_the_dockerignore(kind):
    dockerfile = DOCKERFILES[kind]
    allowed = [ln[1:].rstrip("/") for ln in Path(f"{dockerfile}.dockerignore").read_text().splitlines()
               if ln.startswith("!")]
    assert copies(dockerfile)
    for sources, _ in copies(dockerfile):
        for source in sources:
            assert (REPO / source).exists(), f"{kind}: COPY source {source} missing"
            assert any(source == a or source.startswith(a + "/") for a in allowed), \
                f"{kind}: {source} is excluded by {dockerfile.name}.dockerignore"
    rules = [ln for ln in Path(f"{dockerfile}.dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    assert rules[0] == "**" and "**/.env" in rules, "the context must start from nothing and never ship .env"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_every_pyproject_package_is_copied_for_the_editable_install(kind):
    """`pip install -e .` fails on a package directory pyproject.toml lists but the image lacks."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {setuptools["package-dir"].get(name, name.replace(".", "/")) for name in setuptools["packages"]}
    copied = {source for sources, _ in copies(DOCKERFILES[kind]) for source in sources}
    missing = sorted(d for d in dirs if not any(d == c or d.startswith(c + "/") for c in copied))
    assert not missing, f"{kind}: pyproject.toml packages not copied into the image: {missing}"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfiles_bake_in_no_secret(kind):
    text = DOCKERFILES[kind].read_text()
    for kw, args in instructions(DOCKERFILES[kind]):
        if kw in ("ENV", "ARG"):
            names = re.findall(r"([A-Z][A-Z0-9_]*)=", args) or [args.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n) or n.startswith("AIRFLOW_CONN_")], (kind, args)
        if kw == "COPY":
            assert ".env" not in args and "secret" not in args.lower() and ".json" not in args, (kind, args)
    for label, shape in SECRET_SHAPES.items():
        assert not shape.search(text), f"{kind} Dockerfile contains a {label}"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_python_checks_name_real_modules(kind):
    """The build's smoke import (`python -c "import ..."`) names modules that exist."""
    for kw, args in instructions(DOCKERFILES[kind]):
        m = re.search(r'python -c "import ([\w., ]+)', args) if kw == "RUN" else None
        for module in (m.group(1).split(",") if m else []):
            assert find_spec(module.strip()) is not None, f"{kind}: imports missing module {module}"


def test_requirements_split_pyproject_between_the_images():
    deps = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() for d in
            tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    core = requirement_names(DOCKER / "requirements" / "sleeve-core.txt")
    ml = requirement_names(DOCKER / "requirements" / "sleeve-ml.txt")
    assert not HEAVY & set(core), "the Airflow image must not pull the ML stack"
    assert set(ml) == HEAVY
    assert deps - {"apache-airflow"} == set(core) | set(ml), "docker/requirements/ out of step with pyproject"
    pinned = {ln.split("==")[0].lower().replace("_", "-") for ln in (REPO / "constraints.txt").read_text().splitlines() if "==" in ln}
    extra = {**requirement_names(DOCKER / "requirements" / "airflow-celery.txt"),
             **requirement_names(DOCKER / "requirements" / "gpu-pods.txt")}
    for name, line in {**core, **ml, **extra}.items():
        assert name in pinned or "==" in line, f"{name} is pinned neither in constraints.txt nor in docker/requirements"
    steps = install_steps(DOCKERFILES["airflow"])
    assert "ml" not in steps and "torch" not in steps and {"core", "sleeve"} <= set(steps)


# ------------------------------------------------------------------------------- docker/install.sh
INSTALL = DOCKER / "install.sh"


def install_steps(dockerfile: Path) -> list[str]:
    """The docker/install.sh steps a Dockerfile's RUN lines call, in order."""
    steps = []
    for kind, args in instructions(dockerfile):
        for m in re.finditer(r"docker/install\.sh pip ((?:[a-z]+ ?)+)", args) if kind == "RUN" else ():
            steps += m.group(1).split()
    return steps


def test_both_images_install_only_through_the_install_script():
    """No RUN line of either image calls pip itself: every Python package arrives through the
    script that `make test-cluster` runs too."""
    for kind, dockerfile in DOCKERFILES.items():
        runs = [a for k, a in instructions(dockerfile) if k == "RUN"]
        direct = [r for r in runs if re.search(r"\bpip install\b", r) and "--upgrade pip" not in r]
        assert not direct, f"{kind}: pip called outside docker/install.sh: {direct}"
        assert any("docker/install.sh" in sources for sources, _ in copies(dockerfile)), f"{kind}: install.sh not copied"
    assert install_steps(DOCKERFILES["gpu"]) == ["torch", "celery", "pods", "core", "ml", "sleeve"]
    assert install_steps(DOCKERFILES["airflow"]) == ["core", "celery", "sleeve"]


def test_the_cluster_test_installs_with_the_images_command():
    """`make test-cluster` installs the CeleryExecutor stack with the same script and step as the
    images, so the Celery/Redis/PostgreSQL versions the cluster test ran are the images' ones."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^\tdocker/install\.sh \$\(BIN\)/pip celery$", makefile, re.M)
    assert re.search(r"^test-cluster:.*\.cluster-installed", makefile, re.M)


def test_install_script_is_valid_and_refuses_unknown_steps(tmp_path):
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    assert os.access(INSTALL, os.X_OK)
    fake_pip = tmp_path / "pip"
    fake_pip.write_text("#!/bin/sh\necho \"pip $*\" >> \"$(dirname \"$0\")/calls\"\n")
    fake_pip.chmod(0o755)
    bad = subprocess.run(["bash", str(INSTALL), str(fake_pip), "core", "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown step 'nonsense'" in bad.stderr
    assert subprocess.run(["bash", str(INSTALL), str(fake_pip)], capture_output=True).returncode == 2
    ok = subprocess.run(["bash", str(INSTALL), str(fake_pip), "core", "celery", "torch", "sleeve"],
                        capture_output=True, text=True, env={**os.environ, "TORCH_INDEX_URL": "https://example.invalid/whl"})
    assert ok.returncode == 0, ok.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [
        "pip install apache-airflow==3.3.2 -c constraints.txt -r docker/requirements/sleeve-core.txt",
        "pip install apache-airflow==3.3.2 -c constraints.txt -r docker/requirements/airflow-celery.txt",
        "pip install --index-url https://example.invalid/whl torch==2.13.0",
        "pip install --no-deps -e .",
    ]


def test_celery_stack_pins_resolve_together():
    """constraints.txt pins the CeleryExecutor stack that the cluster test ran; celery 5.7 breaks
    the pinned Celery provider (it imports celery.backends.database.retry, gone in 5.7)."""
    pins = dict(ln.split("==", 1) for ln in (REPO / "constraints.txt").read_text().splitlines() if "==" in ln)
    for name in ("apache-airflow-providers-celery", "apache-airflow-providers-redis",
                 "apache-airflow-providers-postgres", "celery", "kombu", "redis", "psycopg2-binary"):
        assert name in pins, f"constraints.txt lacks {name}"
    major, minor = (int(x) for x in pins["celery"].split(".")[:2])
    assert (major, minor) < (5, 7)


# ------------------------------------------------------------------------------- entrypoints
def test_airflow_image_keeps_the_official_entrypoint():
    assert exec_form(DOCKERFILES["airflow"], "ENTRYPOINT") is None
    assert exec_form(DOCKERFILES["airflow"], "CMD") is None


def test_gpu_image_entrypoint_is_copied_executable_and_valid():
    entry = exec_form(DOCKERFILES["gpu"], "ENTRYPOINT")
    script = entry[-1]
    destinations = {dest: sources for sources, dest in copies(DOCKERFILES["gpu"])}
    assert destinations.get(script) == ["docker/gpu-entrypoint.sh"], f"{script} is not copied into the image"
    assert os.access(ENTRYPOINT, os.X_OK)
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)
    assert exec_form(DOCKERFILES["gpu"], "CMD")[:4] == ["celery", "worker", "--queues", "gpu"]


def _entrypoint(*args):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_gpu_entrypoint_runs_jobs_and_airflow_subcommands():
    job = _entrypoint("python", "-c", "import training, inference; print('job ok')")
    assert job.returncode == 0 and job.stdout.strip() == "job ok", job.stderr
    assert "nvidia-smi" in job.stderr  # says plainly when it sees no GPU
    version = _entrypoint("version")  # -> `airflow version`, as with the official entrypoint
    assert version.returncode == 0 and version.stdout.strip().endswith("3.3.2"), version.stderr
    empty = _entrypoint()
    assert empty.returncode == 2 and "no command" in empty.stderr


def test_gpu_job_modules_named_in_the_readme_exist():
    """The job CLI contract documented in docker/README.md points at real modules."""
    readme = (DOCKER / "README.md").read_text()
    modules = set(re.findall(r"-m ((?:training|inference)\.\w+)", readme))
    assert {"training.train_job", "inference.generate_job"} <= modules
    missing = sorted(m for m in modules if find_spec(m) is None)
    assert not missing, f"docker/README.md documents job modules that do not exist: {missing}"
