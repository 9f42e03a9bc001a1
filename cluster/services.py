"""PostgreSQL and Redis from Debian's packages, run as child processes on 127.0.0.1.

Both are found (or installed with apt when running as root) by :func:`prerequisites`; when
they are missing and cannot be installed it names the exact command instead. Each server
listens on a free loopback port with its data under ``$SLEEVE_HOME/cluster/``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DEBIAN_PACKAGES = ("postgresql", "redis-server")
# Redis keeps the Celery queue in an append-only file, so queued tasks survive a restart of the
# broker (docker-compose.yaml's redis runs with the same arguments; tests/cluster checks it).
REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")


class MissingPrerequisite(RuntimeError):
    """What is missing and the command that installs it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}:\n{tail}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _missing() -> list[str]:
    missing = []
    if _postgres_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def prerequisites(install: bool = True) -> None:
    """Make sure Debian's PostgreSQL and Redis are there; install them with apt when root."""
    missing = _missing()
    if not missing:
        return
    command = f"apt-get install -y {' '.join(missing)}"
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, stdout=subprocess.DEVNULL)
        result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True, text=True)
        if result.returncode == 0 and not _missing():
            return
        raise MissingPrerequisite(f"`{command}` failed:\n{result.stderr[-1500:]}")
    raise MissingPrerequisite(f"the cluster test needs Debian's {' and '.join(missing)}: run `sudo {command}`")


def _start(argv: list[str], log: Path, env: dict | None = None, user: str | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process we started (its whole session), escalating to SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Postgres:
    """A throw-away cluster: initdb into ``root``, superuser ``airflow``, database ``airflow``.
    PostgreSQL refuses to run as root, so as root it runs as Debian's ``postgres`` user."""

    root: Path
    password: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        bindir = _postgres_bin()
        data, sockets = self.root / "data", self.root / "run"
        if not (data / "PG_VERSION").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self.user:
                uid = pwd.getpwnam(self.user).pw_uid
                for path in (self.root, pwfile):
                    os.chown(path, uid, -1)
                _traversable(self.root)
            subprocess.run(["runuser", "-u", self.user, "--"] * bool(self.user) + [
                str(bindir / "initdb"), "-D", str(data), "-U", "airflow", "--auth=scram-sha-256",
                f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"],
                check=True, capture_output=True)
            pwfile.unlink()
        sockets.mkdir(exist_ok=True)
        if self.user:
            os.chown(sockets, pwd.getpwnam(self.user).pw_uid, -1)
        self.proc = _start([str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
                            "-c", "max_connections=200"], self.root.parent / "logs" / "postgres.log", user=self.user)
        wait_for_port(self.port, 60, self.proc, self.root.parent / "logs" / "postgres.log")
        env = {**os.environ, "PGPASSWORD": self.password}
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "-d", "postgres",
                "-tAc"]
        for _ in range(50):  # accepting TCP is not yet accepting logins
            exists = subprocess.run([*psql, "SELECT 1 FROM pg_database WHERE datname = 'airflow'"], env=env,
                                    capture_output=True, text=True)
            if exists.returncode == 0:
                break
            time.sleep(0.2)
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, "CREATE DATABASE airflow"], env=env, check=True, capture_output=True)

    def stop(self) -> None:
        stop(self.proc, signal.SIGINT)  # fast shutdown


def _traversable(path: Path) -> None:
    """The postgres user must be able to reach its data dir through every parent folder."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


@dataclass
class Redis:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = _start(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                            "--daemonize", "no", *REDIS_ARGS], self.root.parent / "logs" / "redis.log")
        wait_for_port(self.port, 30, self.proc, self.root.parent / "logs" / "redis.log")

    def stop(self) -> None:
        stop(self.proc, signal.SIGTERM)  # Redis flushes its append-only file on SIGTERM

    def restart(self) -> None:
        self.stop()
        self.start()
