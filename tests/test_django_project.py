"""The example project (examples/django_counter) on the gateway backend, run as users run it:
``manage.py migrate``/``makemigrations``, and ``runserver`` serving the counter on 127.0.0.1.
Each in its own process (Django is configured once per process)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "django_counter"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example project, its database in tmp_path."""
    copy = tmp_path / "django_counter"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("*.sqlite3*", "__pycache__"))
    return copy


def manage(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COUNTER_DB=str(project / "counter.sqlite3"))
    return subprocess.run([sys.executable, "manage.py", *args], cwd=project, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_migrate_and_makemigrations_run_on_the_backend(project: Path) -> None:
    db = project / "counter.sqlite3"
    done = manage(project, "migrate")
    assert done.returncode == 0, done.stdout
    assert "Applying counter.0001_initial... OK" in done.stdout
    done = manage(project, "makemigrations", "--check", "--dry-run")
    assert done.returncode == 0 and "No changes detected" in done.stdout, done.stdout
    done = manage(project, "shell", "-c",
                  "from counter.views import record_view; record_view('home', 1.0); "
                  "record_view('home', 2.0)")
    assert done.returncode == 0, done.stdout
    # A new field: makemigrations writes 0002, migrate rebuilds the table (SQLite's way)
    # with foreign keys off for the migration only; the rows and their views stay.
    models = project / "counter" / "models.py"
    models.write_text(models.read_text().replace(
        "    views = models.IntegerField(default=0)\n",
        "    views = models.IntegerField(default=0)\n"
        "    title = models.CharField(max_length=50, default='', db_index=True)\n"))
    done = manage(project, "makemigrations", "counter", "--name", "title")
    assert done.returncode == 0 and "0002_title.py" in done.stdout, done.stdout
    done = manage(project, "migrate")
    assert done.returncode == 0 and "Applying counter.0002_title... OK" in done.stdout
    assert rows(db, "SELECT name, views, title FROM counter_page") == [("home", 2, "")]
    assert rows(db, "SELECT count(*) FROM counter_view") == [(2,)]
    assert rows(db, "PRAGMA foreign_key_check") == []
    # And back: both migrations unapplied, the tables gone.
    done = manage(project, "migrate", "counter", "zero")
    assert done.returncode == 0, done.stdout
    assert rows(db, "SELECT name FROM sqlite_master WHERE name LIKE 'counter_%'") == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(project: Path) -> Iterator[str]:
    """``manage.py runserver`` on 127.0.0.1 (threaded, as always); its base URL."""
    assert manage(project, "migrate").returncode == 0
    port = free_port()
    env = dict(os.environ, COUNTER_DB=str(project / "counter.sqlite3"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload",
                             f"127.0.0.1:{port}"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    drain = threading.Thread(target=proc.stdout.read, daemon=True)  # its log, after start
    try:
        give_up = time.monotonic() + 60
        for line in proc.stdout:  # bounded: the server's output, and give_up
            if re.search(rf"Starting development server at http://127\.0\.0\.1:{port}/", line):
                break
            if time.monotonic() > give_up:
                pytest.fail("runserver did not start")
        drain.start()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)
        if drain.is_alive():
            drain.join(30)
        proc.stdout.close()


def test_runserver_counts_every_view_of_concurrent_requests(server: str) -> None:
    answers: list[int] = []
    errors: list[BaseException] = []

    def visit() -> None:
        for _ in range(5):
            try:
                with urllib.request.urlopen(f"{server}/home/", timeout=60) as response:
                    answers.append(json.load(response)["views"])
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=visit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    # Each request read the count, added one and saved it in one atomic() block: no two
    # saw the same count, and none was lost.
    assert sorted(answers) == list(range(1, 41))


def test_the_pageview_benchmark_runs_in_its_smoke_form() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.django_pageview", "--smoke",
                           "--no-wait-quiet"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in done.stdout.splitlines()
             if line.startswith(("stock ", "gateway ", "gateway-fn "))]
    assert [(row[0], row[1]) for row in table] == [
        (way, n) for n in ("1", "4") for way in ("stock", "gateway", "gateway-fn")]
    goals = [line for line in done.stdout.splitlines() if line.endswith("ok)")]
    assert len(goals) == 3  # each way's file check line
    assert "FAILED" not in done.stdout
