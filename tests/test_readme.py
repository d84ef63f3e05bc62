"""The README and the guide run as written.

Every Python example of README.md and docs/guide.md runs twice in a row in one empty folder
(a second run must not trip over the first one's files). The two web examples (CherryPy in
README, Flask in the guide) are started from the documents' own code on a free loopback
port, and the shell commands printed after each (curl) run as printed against them, only
the port changed. README's backup commands run as printed too.

Each example runs in a child interpreter, bounded in time; servers are stopped with SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from conftest import ROOT, child_python, run_python

from sqlite_gateway import Gateway

RUN_TIMEOUT = 50  # seconds for one run of one example (1-5 s here); two fit in pytest's 120
RUNS = 2
DOCS = ("README.md", "docs/guide.md")  # the documents whose Python examples run here


def fenced(doc: str) -> list[tuple[str, str]]:
    """Every fenced block of ``doc`` in order, as (language, text)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", (ROOT / doc).read_text(), re.S | re.M)


def python_blocks() -> list[str]:
    return [text for doc in DOCS for lang, text in fenced(doc) if lang == "python"]


def block_named(mark: str) -> str:
    found = [b for b in python_blocks() if mark in b]
    assert len(found) == 1, f"{len(found)} python blocks hold {mark!r}"
    return found[0]


def shell_after(mark: str) -> str:
    """The sh block right after the python block holding ``mark`` (README, then the guide)."""
    doc = next(d for d in DOCS if any(lang == "python" and mark in text
                                      for lang, text in fenced(d)))
    blocks = fenced(doc)
    at = next(i for i, (lang, text) in enumerate(blocks) if lang == "python" and mark in text)
    lang, text = blocks[at + 1]
    assert lang == "sh", f"no sh block after the example holding {mark!r}"
    return text


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
    # its page counter grows by 100 views a run
    'AsyncGateway("async-app.db"': lambda run, folder: [str(100 * run), "1"],
    # one hit a run, through SQLAlchemy on the sqlite+gateway dialect
    'sqlite+gateway:///orm-hits.db': lambda run, folder: [str(run)],
    'GatewayDatabase("peewee-hits.db")': lambda run, folder: [str(run)],  # peewee, likewise
    'Replicator("durable.db"': lambda run, folder: [
        os.path.join(folder, "durable-from-replica.db")],
}


@pytest.mark.parametrize("mark", sorted(EXPECTED))
def test_doc_example_runs_twice(tmp_path, mark):
    folder = os.path.realpath(tmp_path)
    for run, lines in enumerate(run_twice(tmp_path, block_named(mark)), start=1):
        assert lines == EXPECTED[mark](run, folder), f"run {run}"


def test_metrics_example_runs_twice(tmp_path):
    for lines in run_twice(tmp_path, block_named('Gateway("monitored.db")')):
        names = sorted(line.split()[0] for line in lines)
        assert names == ["sqlite_gateway_commits_total", "sqlite_gateway_queue_depth"]
        commits = next(line for line in lines if line.startswith("sqlite_gateway_commits"))
        assert float(commits.split()[1]) >= 1  # the CREATE TABLE, committed


def test_gunicorn_hooks_open_and_close_a_gateway_in_each_worker(tmp_path):
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


CHERRYPY = block_named("# cherrypy_hits.py")
FLASK = block_named("# flask_hits.py")
FLASK_PAGEVIEWS = block_named("# flask_pageviews.py")  # tests/test_flask.py runs it
DJANGO = block_named('"ENGINE": "sqlite_gateway.integrations.django"')  # test_django_docs runs it


def test_every_python_block_is_run_by_a_test():
    runs_it = [QUICKSTART, *map(block_named, EXPECTED), block_named('Gateway("monitored.db")'),
               block_named("# gunicorn.conf.py"), CHERRYPY, FLASK, FLASK_PAGEVIEWS, DJANGO]
    assert sorted(runs_it) == sorted(python_blocks())


# -- the web examples, and the README's curl commands against them -----------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def curl_lines(commands: str, printed_port: int) -> list[tuple[str, object]]:
    """Each ``curl ... # {json}`` line of an sh block: (command, the JSON it shows)."""
    found = []
    for line in commands.splitlines():
        command, _, shown = line.partition("#")
        assert command.startswith("curl ") and f"127.0.0.1:{printed_port}/" in command, line
        found.append((command.strip(), json.loads(shown)))
    return found


def run_curl(command: str, port: int, printed_port: int) -> object:
    """Run one curl command as printed, against ``port`` instead of ``printed_port``."""
    live = command.replace(f"127.0.0.1:{printed_port}/", f"127.0.0.1:{port}/")
    done = subprocess.run(["bash", "-c", live], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{live}: exit {done.returncode}\n{done.stderr}"
    return json.loads(done.stdout)


def serve(tmp_path, pin: str, code: str, up: str, printed_port: int, mark: str) -> None:
    """Run a server example twice, after ``pin`` (which sets a free port for PORT). Each
    time, wait until it says ``up``, run the README's curl lines against it, stop it with
    SIGINT (Ctrl-C) and expect a clean exit (the gateway drains). The hit count lives in
    the file, so the second run counts 2 where README shows 1."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the README's curl commands cannot run")
    commands = curl_lines(shell_after(mark), printed_port)
    for run in range(1, RUNS + 1):
        port = free_port()
        pinned = pin.replace("PORT", str(port)) + code
        with child_python(in_folder(tmp_path, pinned), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as child:
            wait_for_line(child, up, 40)
            for command, shown in commands:
                if isinstance(shown, dict) and "hits" in shown:
                    shown = {**shown, "hits": shown["hits"] + run - 1}
                assert run_curl(command, port, printed_port) == shown, (run, command)
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=40)
            assert child.returncode == 0, err


def test_readme_cherrypy_example_answers_the_readmes_curl_commands(tmp_path):
    pin = "import cherrypy\ncherrypy.config.update({'server.socket_port': PORT})\n"
    serve(tmp_path, pin, CHERRYPY, "ENGINE Bus STARTED", 8080, "# cherrypy_hits.py")


def test_readme_flask_example_answers_the_readmes_curl_commands(tmp_path):
    pin = ("import flask\n_run = flask.Flask.run\n"
           "flask.Flask.run = lambda self, *a, **k: _run(self, *a, **{**k, 'port': PORT})\n")
    serve(tmp_path, pin, FLASK, "Running on", 5000, "# flask_hits.py")


# -- the shell commands ----------------------------------------------------------------------

def readme_shell_blocks() -> list[str]:
    return [text for lang, text in fenced("README.md") if lang == "sh"]


def test_the_readme_test_command_is_the_ci_script():
    assert "bash .ci/run\n" in readme_shell_blocks()
    assert (ROOT / ".ci" / "run").is_file()


def test_the_readme_setup_command_installs_the_demo_apps_extra_and_runs_it():
    setup = next(b for b in readme_shell_blocks() if "-m webapp" in b)
    steps = setup.strip().split(" && ")
    assert steps == ["python3 -m venv .venv", ".venv/bin/pip install -e '.[web]'",
                     ".venv/bin/python -m webapp"]


def test_readme_backup_commands_run_as_printed(tmp_path):
    commands = next(b for b in readme_shell_blocks() if "sqlite-gateway backup" in b)
    # As from a checkout: .venv/bin/ is this interpreter's, demo.db a database with a row.
    (tmp_path / ".venv").symlink_to(sys.prefix)
    with Gateway(str(tmp_path / "demo.db")) as db:
        db.execute("CREATE TABLE t(x)")
        db.execute("INSERT INTO t VALUES (42)")
    done = subprocess.run(["bash", "-c", "set -e\n" + commands], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [backup] = (tmp_path / "backups").iterdir()
    [restored] = tmp_path.glob("demo-from-backup-*.db")
    for copy in (backup, restored):
        with Gateway(str(copy), readers=0) as db:
            assert db.execute("SELECT x FROM t").scalar() == 42
