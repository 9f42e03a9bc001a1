"""The warm job server runs a job as `python -m` would, in a process of its own, and kills it when
its caller goes away."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sleeve.jobserver import EXIT_MARK, JobServerError, submit

JOB = '''
import os, subprocess, sys, time
mode = sys.argv[1]
print("argv", sys.argv[1:], flush=True)
print("who", os.environ.get("WHO"), os.getcwd(), flush=True)
print("version", __import__("jobmod_version").VERSION, flush=True)
print("sleeve from", __import__("sleeve").__file__, flush=True)
if mode == "exit":
    sys.exit(int(sys.argv[2]))
if mode == "raise":
    raise ValueError("the job broke")
if mode == "signal":
    os.kill(os.getpid(), 9)  # SIGKILL
if mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print("pids", os.getpid(), child.pid, flush=True)
    time.sleep(120)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server process, started as an operator would (preloading only json: speed)."""
    root = tmp_path_factory.mktemp("jobserver")
    sock = root / "jobs.sock"
    env = {**os.environ, "WHO": "server"}
    proc = subprocess.Popen([sys.executable, "-m", "sleeve.jobserver", "--socket", str(sock), "--preload", "json"],
                            env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("job server ready")
    yield sock
    proc.terminate()
    assert proc.wait(10) == 0
    assert not sock.exists()  # it cleans up after itself


@pytest.fixture
def jobdir(tmp_path):
    (tmp_path / "jobmod.py").write_text(JOB)
    (tmp_path / "jobmod_version.py").write_text("VERSION = 1\n")
    (tmp_path / "sleeve").mkdir()  # the caller's checkout of the project, not the server's
    (tmp_path / "sleeve" / "__init__.py").write_text("")
    return tmp_path


def _run(sock, jobdir, *args, env=None):
    items = list(submit(sock, ["jobmod", *args], env={**os.environ, "WHO": "caller", **(env or {})}, cwd=str(jobdir)))
    return items[:-1], items[-1]


def test_a_job_runs_with_the_callers_argv_env_and_cwd_and_its_exit_code(server, jobdir):
    lines, status = _run(server, jobdir, "exit", "3")
    assert status == 3
    assert lines[:4] == ["argv ['exit', '3']", f"who caller {jobdir}", "version 1",
                         f"sleeve from {jobdir / 'sleeve' / '__init__.py'}"]
    assert _run(server, jobdir, "exit", "0")[1] == 0


def test_project_code_is_read_from_disk_for_every_job_never_cached_by_the_server(server, jobdir):
    assert "version 1" in _run(server, jobdir, "exit", "0")[0]
    (jobdir / "jobmod_version.py").write_text("VERSION = 2\n")
    assert "version 2" in _run(server, jobdir, "exit", "0")[0]


def test_a_failing_job_reports_its_traceback_and_code_1(server, jobdir):
    lines, status = _run(server, jobdir, "raise")
    assert status == 1
    assert lines[-1] == "ValueError: the job broke" and any("Traceback" in line for line in lines)


def test_a_job_killed_by_a_signal_reports_minus_the_signal(server, jobdir):
    assert _run(server, jobdir, "signal")[1] == -signal.SIGKILL


def test_a_caller_that_hangs_up_kills_the_job_and_what_it_started(server, jobdir):
    output = submit(server, ["jobmod", "hang"], env=dict(os.environ), cwd=str(jobdir))
    pids = next([int(p) for p in line.split()[1:]] for line in output if str(line).startswith("pids"))
    output.close()  # the task was killed: the connection closes
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in pids if _alive(pid)]
    assert not alive, f"still running after the caller left: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, only not yet reaped
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_bad_requests_are_refused_with_the_reason(server, jobdir):
    lines, status = list(_run(server, jobdir / "missing", "exit", "0"))
    assert status == 2 and "is not a directory" in lines[0]
    import json
    import socket

    with socket.socket(socket.AF_UNIX) as raw:  # another interpreter: other packages
        raw.connect(str(server))
        raw.sendall(json.dumps({"argv": ["jobmod"], "env": {}, "cwd": str(jobdir), "python": "/usr/bin/python9"})
                    .encode() + b"\n")
        reply = raw.makefile().read()
    assert "the job asks for '/usr/bin/python9'" in reply and reply.endswith(f"{EXIT_MARK}2\n")


def test_no_server_at_the_socket_names_the_setting_and_how_to_start_one(tmp_path):
    with pytest.raises(JobServerError, match=r"SLEEVE_GPU_JOB_SERVER=.*python -m sleeve.jobserver"):
        list(submit(tmp_path / "none.sock", ["jobmod"], env={}, cwd=str(tmp_path)))


def test_a_socket_path_too_long_for_unix_sockets_is_refused_before_anything_starts(tmp_path):
    from sleeve.jobserver import serve

    with pytest.raises(JobServerError, match="longer than the 107 bytes"):
        serve(tmp_path / ("x" * 120) / "jobs.sock", preload=())
