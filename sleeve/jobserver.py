"""A warm job server: GPU jobs without paying the library imports every time.

A job is a ``python -m <module>`` command line (:mod:`sleeve.jobs`). Started fresh, each one
spends ~10 s on a CPU box importing torch, diffusers, transformers and peft before doing any
work; a weekly cycle runs a dozen jobs. The server imports those libraries once and forks a
process per job, so a job starts in a fraction of a second and still runs in a process of its
own (its own memory, its own environment, killed with its process group)::

    python -m sleeve.jobserver --socket $SLEEVE_HOME/run/jobs.sock

and with ``SLEEVE_GPU_JOB_SERVER=$SLEEVE_HOME/run/jobs.sock`` the launcher
(:mod:`sleeve_airflow.gpu`) sends its jobs there instead of starting them. Run one per GPU box,
as the user the worker runs as: whoever can open the socket runs code as the server.

Only third-party libraries are preloaded, never Sleeve's own modules: every job imports the
project code as it is on disk, with the caller's environment, exactly as a fresh process would.
Nothing may touch CUDA or torch's thread pools before the fork (both are unsafe to fork); the
preloading only imports.

The protocol, one connection per job: the client sends one JSON line ``{"argv": [module,
args...], "env": {...}, "cwd": path}``; the server streams the job's stdout and stderr back and
ends with a line ``EXIT_MARK <status>`` (the exit code, or minus the signal that killed it). A
client that hangs up cancels its job: the whole process group is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

PRELOAD = ("torch", "safetensors.torch", "transformers", "diffusers", "peft", "accelerate", "numpy", "PIL.Image")
EXIT_MARK = "\x00sleeve-jobserver-exit"
MAX_REQUEST_BYTES = 1 << 20
MAX_SOCKET_PATH = 107  # bytes: sun_path of a unix socket address on Linux, less the final NUL
_SERVER_PATH = list(sys.path)  # before any job changes it
_SERVER_PYTHONPATH = os.environ.get("PYTHONPATH", "")


class JobServerError(RuntimeError):
    """The server could not be reached or broke off without the job's exit status."""


# ---------------------------------------------------------------- client


def submit(socket_path: str | Path, argv: list[str], *, env: dict[str, str], cwd: str) -> Iterator[str | int]:
    """Run ``python -m argv[0] argv[1:]`` on the server: yields the job's output lines, then its
    exit status (an int: the code, or ``-signal``) as the last item."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(socket_path))
    except OSError as exc:
        client.close()
        raise JobServerError(
            f"no job server at SLEEVE_GPU_JOB_SERVER={socket_path} ({exc.strerror}); start one with "
            f"`python -m sleeve.jobserver --socket {socket_path}` or unset SLEEVE_GPU_JOB_SERVER") from exc
    with client, client.makefile("r", encoding="utf-8", errors="replace", newline="\n") as replies:
        request = {"argv": argv, "env": env, "cwd": cwd, "python": sys.executable}
        client.sendall(json.dumps(request).encode() + b"\n")
        for line in replies:
            line = line.rstrip("\n")
            if line.startswith(EXIT_MARK):
                yield int(line[len(EXIT_MARK):])
                return
            if line:
                yield line
    raise JobServerError(f"the job server at {socket_path} hung up before {argv[0]} finished (was it stopped?)")


@contextlib.contextmanager
def running_server(socket_path: str | Path, preload: tuple[str, ...] = PRELOAD, timeout: float = 120.0):
    """A server in a child process for the duration of the block (the demo, the simulation,
    the benchmark): yields its socket path once it accepts jobs; stopped on the way out."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "sleeve.jobserver", "--socket", str(socket_path),
                             "--preload", ",".join(preload)], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready or not proc.stdout.readline().startswith("job server ready"):
            raise JobServerError(f"the job server did not start within {timeout:.0f} s (exit code {proc.poll()})")
        yield str(socket_path)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- server


def serve(socket_path: str | Path, preload: tuple[str, ...] = PRELOAD, ready=None) -> None:
    """Accept jobs forever (until SIGTERM/SIGINT). One forked supervisor per connection."""
    for name in preload:
        importlib.import_module(name)
    path = Path(socket_path)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise JobServerError(f"socket path {path} is longer than the {MAX_SOCKET_PATH} bytes a unix socket allows; "
                             "choose a shorter one")
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket from a server that died
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)  # only this user may run jobs
    listener.listen(16)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if ready:
        ready()
    try:
        while True:
            readable, _, _ = select.select([listener], [], [], 1.0)
            _reap()
            if readable:
                conn, _ = listener.accept()
                if os.fork() == 0:  # the supervisor of this job
                    listener.close()
                    os._exit(_supervise(conn))
                conn.close()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _supervise(conn: socket.socket) -> int:
    """Read the request, fork the job, wait for it (killing it if the client leaves), report."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        request = _read_request(conn)
    except ValueError as exc:
        conn.sendall(f"job server: bad request: {exc}\n{EXIT_MARK}2\n".encode())
        return 0
    pid = os.fork()
    if pid == 0:
        _run_job(conn, request)  # never returns
    status = _wait(pid, conn)
    with contextlib.suppress(OSError):
        conn.sendall(f"\n{EXIT_MARK}{status}\n".encode())
    return 0


def _read_request(conn: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("the client hung up before sending its request")
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    request = json.loads(data)
    argv, env, cwd = request.get("argv"), request.get("env"), request.get("cwd")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings (module, args...)")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("env must map strings to strings")
    if not (isinstance(cwd, str) and os.path.isdir(cwd)):
        raise ValueError(f"cwd {cwd!r} is not a directory")
    if request.get("python") != sys.executable:  # another venv: other packages, other versions
        raise ValueError(f"this server runs {sys.executable}, the job asks for {request.get('python')!r}; "
                         "start a job server from the same environment")
    return request


def _wait(pid: int, conn: socket.socket) -> int:
    """The job's exit status; a client that hangs up (task killed, timed out) kills the job."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        readable, _, _ = select.select([conn], [], [], 0.5)
        if readable and not conn.recv(1, socket.MSG_PEEK):  # EOF: the client is gone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL


def _run_job(conn: socket.socket, request: dict) -> None:
    """In the job process: become ``python -m module args...`` with the caller's env and cwd."""
    import runpy

    os.setsid()  # its own process group: cancelling kills what it started too
    for fd in (1, 2):
        os.dup2(conn.fileno(), fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered, as PYTHONUNBUFFERED would
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[:] = _job_path(request["cwd"], request["env"].get("PYTHONPATH", ""))
    for name in [m for m in sys.modules if m == "sleeve" or m.startswith("sleeve.")]:
        del sys.modules[name]  # this server's own package: the job imports the caller's checkout
    argv = request["argv"]
    sys.argv = list(argv)
    code = 0
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the job's traceback, as the interpreter would print it
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _job_path(cwd: str, pythonpath: str) -> list[str]:
    """``sys.path`` as ``python -m`` would build it for the caller: its cwd, its PYTHONPATH,
    then this interpreter's own entries (without the server's PYTHONPATH)."""
    own = set(filter(None, _SERVER_PYTHONPATH.split(os.pathsep)))
    theirs = [p for p in pythonpath.split(os.pathsep) if p]
    return [cwd, *theirs, *[p for p in _SERVER_PATH[1:] if p not in own]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Sleeve's GPU jobs from one warm process.")
    parser.add_argument("--socket", required=True, help="unix socket path (SLEEVE_GPU_JOB_SERVER)")
    parser.add_argument("--preload", default=",".join(PRELOAD), help="comma-separated modules to import once")
    args = parser.parse_args(argv)
    preload = tuple(m.strip() for m in args.preload.split(",") if m.strip())
    serve(args.socket, preload, ready=lambda: print(f"job server ready on {args.socket}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
