"""The README runs as written: every Python example, twice in a row in one empty folder
(a second run must not trip over the first one's files). Its test command is ``bash
.ci/run``, whose own tests are in test_ci_script.py and test_ci_pythons.py.

Each example runs in a child interpreter, bounded in time; the two that start a web server
listen on a free loopback port chosen here, get real requests, and are stopped with SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from conftest import ROOT, child_python, run_python

RUN_TIMEOUT = 50  # seconds for one run of one example (1-5 s here); two fit in pytest's 120
RUNS = 2


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def block_named(mark: str) -> str:
    found = [b for b in python_blocks() if mark in b]
    assert len(found) == 1, f"{len(found)} README python blocks hold {mark!r}"
    return found[0]


def in_folder(folder, code: str) -> str:
    """The example as printed, run from ``folder``; SIGINT raises KeyboardInterrupt (as in a
    terminal) even if this test was started with SIGINT ignored."""
    return (f"import os, signal; os.chdir({str(folder)!r}); "
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n" + code)


def run_twice(tmp_path, code: str, prefix: str = "") -> list[list[str]]:
    outputs = []
    for run in range(1, RUNS + 1):
        proc = run_python(in_folder(tmp_path, prefix + code), timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, f"run {run} failed:\n{proc.stderr}"
        outputs.append(proc.stdout.splitlines())
    return outputs


# -- examples that run to their end ---------------------------------------------------------

QUICKSTART = block_named('Gateway("quickstart.db")')


def test_readme_quickstart_runs_as_written_twice(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S)
    assert block and block.group(1) == QUICKSTART, "the quickstart is the section's first block"
    for lines in run_twice(tmp_path, QUICKSTART):
        assert lines[0] == "(('home', 800),) ('name', 'views')"
        assert lines[1] == "800"
        assert lines[2].startswith("refused: UNIQUE constraint failed")
        assert lines[3] == "[1, 1, 1]"
        assert lines[-1].startswith("after close: gateway is closed")


EXPECTED: dict[str, Callable[[int, str], list[str]]] = {  # (run, folder) -> stdout lines
    'Gateway("events.db")': lambda run, folder: [
        "failed: INSERT INTO events(kind) VALUES (?) (None,) ConstraintError",
        "1 post failure(s)"],
    'Gateway("migrated.db")': lambda run, folder: ["schema version 3"],
    'Gateway("typed.db")': lambda run, folder: ["True"],
    "TransactionControlError, ConnectionSettingError, NestedCallError)":
        lambda run, folder: [],  # the public names import
    # its page counter grows by 100 views a run
    'AsyncGateway("async-app.db"': lambda run, folder: [str(100 * run), "1"],
    'Replicator("durable.db"': lambda run, folder: [
        os.path.join(folder, "durable-from-replica.db")],
}


@pytest.mark.parametrize("mark", sorted(EXPECTED))
def test_readme_example_runs_twice(tmp_path, mark):
    folder = os.path.realpath(tmp_path)
    for run, lines in enumerate(run_twice(tmp_path, block_named(mark)), start=1):
        assert lines == EXPECTED[mark](run, folder), f"run {run}"


def test_readme_metrics_example_runs_twice(tmp_path):
    for lines in run_twice(tmp_path, block_named('Gateway("monitored.db")')):
        names = sorted(line.split()[0] for line in lines)
        assert names == ["sqlite_gateway_commits_total", "sqlite_gateway_queue_depth"]
        commits = next(line for line in lines if line.startswith("sqlite_gateway_commits"))
        assert float(commits.split()[1]) >= 1  # the CREATE TABLE, committed


def test_readme_gunicorn_hooks_open_and_close_a_gateway_in_each_worker(tmp_path):
    hooks = block_named("# gunicorn.conf.py")
    # A stand-in for the app module the hooks import, then what gunicorn does per worker.
    driver = (hooks + "\nimport sys, types\n"
              "sys.modules['myapp'] = myapp = types.ModuleType('myapp')\n"
              "post_fork(None, None)\n"
              "print(myapp.db.execute('SELECT 41 + 1').scalar(), myapp.db.state.value)\n"
              "worker_exit(None, None)\n"
              "print(myapp.db.state.value)\n")
    for lines in run_twice(tmp_path, driver):
        assert lines == ["42 running", "closed"]


def test_every_python_block_is_run_by_a_test():
    runs_it = [QUICKSTART, *map(block_named, EXPECTED), block_named('Gateway("monitored.db")'),
               block_named("# gunicorn.conf.py"), CHERRYPY, FLASK]
    assert sorted(runs_it) == sorted(python_blocks())


# -- examples that start a web server ---------------------------------------------------------

CHERRYPY = block_named("cherrypy.quickstart(Root())")
FLASK = block_named("# flask_pageviews.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def wait_for_line(child: subprocess.Popen, marker: str, seconds: float) -> None:
    """Read the child's stderr until it holds ``marker`` (the server is up)."""
    deadline = time.monotonic() + seconds
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(child.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                continue
            chunk = os.read(child.stderr.fileno(), 65536)  # unbuffered: select stays true
            assert chunk, "the server ended before it was up:\n" + seen.decode()
            seen += chunk
            if marker.encode() in seen:
                return
    raise AssertionError(f"no {marker!r} in {seconds} s:\n" + seen.decode())


def serve(tmp_path, pin: str, code: str, up: str, talk: Callable[[str, int], None]) -> None:
    """Run a server example twice, after ``pin`` (which sets a free port for PORT). Each
    time, wait until it says ``up``, ``talk`` to it, stop it with SIGINT (Ctrl-C) and
    expect a clean exit (the gateway drains)."""
    for run in range(1, RUNS + 1):
        port = free_port()
        pinned = pin.replace("PORT", str(port)) + code
        with child_python(in_folder(tmp_path, pinned), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as child:
            wait_for_line(child, up, 40)
            talk(f"http://127.0.0.1:{port}", run)
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=40)
            assert child.returncode == 0, err


def test_readme_cherrypy_example_serves_twice(tmp_path):
    pin = ("import cherrypy\ncherrypy.config.update({'server.socket_host': '127.0.0.1', "
           "'server.socket_port': PORT})\n")

    def talk(base: str, run: int) -> None:
        assert http("POST", base + "/hit") == (200, {"ok": True})
        assert http("GET", base + "/") == (200, {"hits": run})  # the table is the file's

    serve(tmp_path, pin, CHERRYPY, "ENGINE Bus STARTED", talk)


def test_readme_flask_example_serves_twice(tmp_path):
    pin = ("import flask\n_run = flask.Flask.run\n"
           "flask.Flask.run = lambda self, *a, **k: "
           "_run(self, *a, **{**k, 'host': '127.0.0.1', 'port': PORT})\n")

    def talk(base: str, run: int) -> None:
        created, _ = http("POST", base + "/pages/home/3")
        assert created == (201 if run == 1 else 409)  # the page is in the file already
        assert http("POST", base + "/pages/home/views") == (201, {"views": run})
        assert http("GET", base + "/pages/home") == (200, {"name": "home", "views": run,
                                                          "cap": 3})

    serve(tmp_path, pin, FLASK, "Running on", talk)
