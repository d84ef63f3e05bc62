"""The Django backend (``ENGINE = "sqlite_gateway.integrations.django"``), in this process.

Django is configured once per process: the example project's app (``counter``:
Page, View) on two gateway databases in a temporary directory, ``default`` and
``short`` (a short hold limit, ATOMIC_REQUESTS on).
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from django.conf import settings  # noqa: E402

from sqlite_gateway import NestedCallError, WriteBlockExpired  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "django_counter"


def add_answer(conn: Any) -> None:
    """A project's own SQL function, given as OPTIONS["connection_setup"]."""
    conn.create_scalar_function("answer", lambda: 42, 0)


@pytest.fixture(scope="module")
def django_env() -> Iterator[Path]:
    """Django configured on two gateway databases, migrated."""
    if settings.configured:  # the module's own set-up ran in this process before
        yield Path(settings.DATABASES["default"]["NAME"]).parent
        return
    directory = Path(tempfile.mkdtemp(prefix="django-gateway-"))
    sys.path.insert(0, str(EXAMPLE))
    import django

    settings.configure(
        DATABASES={
            "default": {"ENGINE": "sqlite_gateway.integrations.django",
                        "NAME": str(directory / "app.sqlite3"),
                        "OPTIONS": {"readers": 2, "connection_setup": add_answer}},
            "short": {"ENGINE": "sqlite_gateway.integrations.django",
                      "NAME": str(directory / "short.sqlite3"), "ATOMIC_REQUESTS": True,
                      "OPTIONS": {"hold_limit": 0.5}},
        },
        INSTALLED_APPS=["counter"], USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField")
    django.setup()
    from django.core.management import call_command

    for alias in ("default", "short"):
        call_command("migrate", database=alias, verbosity=0)
    try:
        yield directory
    finally:
        from django.db import connections

        from sqlite_gateway.integrations import registry

        connections.close_all()
        registry.close_all(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def wait_until(condition: Callable[[], bool], what: str, bound: float = 30.0) -> None:
    """Poll a state (not a clock) until it holds; fail after ``bound`` seconds."""
    give_up = time.monotonic() + bound
    while not condition():  # bounded: give_up
        if time.monotonic() > give_up:
            pytest.fail(f"not reached within {bound} s: {what}")
        time.sleep(0.01)


def run_threads(target: Callable[[], None], count: int) -> list[BaseException]:
    """Run ``target`` in ``count`` threads (each closes its connection); their errors."""
    from django.db import connections

    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return errors


def test_atomic_read_modify_write_is_exact_across_threads(django_env: Path) -> None:
    from counter.models import Page
    from django.db import transaction

    Page.objects.create(name="rmw")

    def increment_ten_times() -> None:
        for _ in range(10):
            with transaction.atomic():
                page = Page.objects.get(name="rmw")  # read ...
                page.views += 1  # ... modify in Python ...
                page.save(update_fields=["views"])  # ... write: nobody came between

    assert run_threads(increment_ten_times, 4) == []
    assert Page.objects.get(name="rmw").views == 40


def test_nested_atomic_rolls_back_alone(django_env: Path) -> None:
    from counter.models import Page
    from django.db import IntegrityError, transaction

    with transaction.atomic():
        Page.objects.create(name="outer")
        with contextlib.suppress(IntegrityError), transaction.atomic():
            Page.objects.create(name="inner")
            Page.objects.create(name="outer")  # unique: this block alone rolls back
        Page.objects.create(name="after")
    names = set(Page.objects.filter(name__in=["outer", "inner", "after"])
                .values_list("name", flat=True))
    assert names == {"outer", "after"}


def test_statements_outside_atomic_are_single_calls_and_reads_use_the_readers(
        django_env: Path) -> None:
    from counter.models import Page
    from django.db import connection

    db = connection.gateway()
    Page.objects.create(name="single")  # committed when it returns
    reads = db.stats()["reads"]
    assert Page.objects.filter(name="single").count() == 1
    assert db.stats()["reads"] == reads + 1
    # An outside view (a separate connection) sees the write at once.
    import apsw

    outside = apsw.Connection(str(django_env / "app.sqlite3"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = outside.execute("SELECT count(*) FROM counter_page WHERE name = 'single'")
        assert rows.fetchall() == [(1,)]
    finally:
        outside.close()


def test_djangos_sql_functions_and_the_projects_own_are_on_readers_and_writer(
        django_env: Path) -> None:
    from counter.models import Page
    from django.db import connection, transaction
    from django.db.models import DateField, Value
    from django.db.models.functions import MD5, ExtractYear

    Page.objects.create(name="fx")
    day = Value(datetime.date(2024, 5, 6), output_field=DateField())
    query = Page.objects.filter(name="fx").annotate(year=ExtractYear(day), digest=MD5("name"))
    expected = [(2024, "c3f9558d681bac963339b7c69894c4f7")]
    db = connection.gateway()
    reads = db.stats()["reads"]
    assert list(query.values_list("year", "digest")) == expected  # on a reader
    assert db.stats()["reads"] == reads + 1
    with connection.cursor() as cursor:
        assert cursor.execute("SELECT answer()").fetchone() == (42,)
    with transaction.atomic():  # on the writer
        assert list(query.values_list("year", "digest")) == expected
        with connection.cursor() as cursor:
            assert cursor.execute("SELECT answer()").fetchone() == (42,)


def test_on_writer_runs_orm_code_as_one_unit(django_env: Path) -> None:
    from counter.models import Page
    from django.db import IntegrityError, transaction

    from sqlite_gateway.integrations.django import on_writer

    @on_writer
    def create_pages(name: str) -> int:
        Page.objects.create(name=name)
        with contextlib.suppress(IntegrityError), transaction.atomic():
            Page.objects.create(name=name)  # a savepoint: rolls back alone
        Page.objects.create(name=name + "-2")
        return Page.objects.filter(name__startswith=name).count()

    assert create_pages("unit") == 2

    @on_writer
    def create_more(name: str) -> int:
        return create_pages(name) + create_pages(name + "-b")  # nested: one unit

    assert create_more("nest") == 2 + 2
    assert Page.objects.filter(name__startswith="nest").count() == 4

    @on_writer
    def fails(name: str) -> None:
        Page.objects.create(name=name)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fails("undone")
    assert not Page.objects.filter(name="undone").exists()
    with transaction.atomic(), pytest.raises(NestedCallError):
        create_pages("inside-a-block")  # would wait for the block its caller holds


def test_schema_change_keeps_referring_rows_and_turns_foreign_keys_back_on(
        django_env: Path) -> None:
    from counter.models import Page, View
    from django.db import IntegrityError, connection, models

    page = Page.objects.create(name="parent")
    View.objects.create(page=page, ts=1.0)
    old = Page._meta.get_field("name")
    new = models.CharField(max_length=200, unique=True)
    new.set_attributes_from_name("name")
    new.model = Page
    with connection.schema_editor() as editor:
        editor.alter_field(Page, old, new)  # SQLite: the table is rebuilt (dropped, renamed)
    # Dropping the old table with foreign keys on would have cascaded to the view.
    assert View.objects.filter(page__name="parent").count() == 1
    db = connection.gateway()
    on = db.run_exclusive(lambda conn: conn.execute("PRAGMA foreign_keys").fetchall())
    assert on == [(1,)]
    with connection.cursor() as cursor:  # as Django reads it
        assert cursor.execute("PRAGMA foreign_keys").fetchone() == (1,)
    with pytest.raises(IntegrityError):
        View.objects.create(page_id=10**9, ts=0.0)


def test_other_threads_writes_wait_for_a_schema_change_then_go_on(django_env: Path) -> None:
    from counter.models import Page
    from django.db import connection

    db = connection.gateway()
    assert connection.disable_constraint_checking()
    try:
        queued = db.stats()["queued"]
        errors: list[BaseException] = []
        writer = threading.Thread(target=lambda: errors.extend(
            run_threads(lambda: Page.objects.create(name="waited"), 1)))
        writer.start()
        wait_until(lambda: db.stats()["queued"] > queued, "the other thread's write queued")
        assert not Page.objects.filter(name="waited").exists()
    finally:
        connection.enable_constraint_checking()
    writer.join(60)
    assert not writer.is_alive() and errors == []
    assert Page.objects.filter(name="waited").exists()


def test_atomic_requests_is_warned_about_by_the_checks(django_env: Path) -> None:
    from django.db import connections

    assert [w.id for w in connections["short"].validation.check()] == ["sqlite_gateway.W001"]
    assert connections["default"].validation.check() == []


def test_a_block_held_past_its_hold_limit_is_rolled_back_and_the_next_one_works(
        django_env: Path) -> None:
    from counter.models import Page
    from django.db import connections, transaction

    db = connections["short"].gateway()
    pages = Page.objects.using("short")
    expired = db.stats()["write_blocks_expired"]
    with pytest.raises(WriteBlockExpired), transaction.atomic(using="short"):
        pages.create(name="long")
        wait_until(lambda: db.stats()["write_blocks_expired"] > expired,
                   "the block passed its hold limit")
        pages.create(name="too-late")
    assert not pages.filter(name__in=["long", "too-late"]).exists()
    with transaction.atomic(using="short"):
        pages.create(name="next")
    assert pages.filter(name="next").exists()


def _child_writes(name: str) -> tuple[int, int]:
    from counter.models import Page
    from django.db import connection

    Page.objects.create(name=name)
    return Page.objects.filter(name="made-by-parent").count(), connection.gateway().stats()[
        "requests"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_forked_child_opens_its_own_gateway(django_env: Path) -> None:
    from counter.models import Page
    from django.db import connection

    Page.objects.create(name="made-by-parent")  # the parent's gateway is open
    with multiprocessing.get_context("fork").Pool(1) as pool:
        seen, child_requests = pool.apply(_child_writes, ("made-by-child",))
    assert seen == 1
    assert child_requests >= 1  # its own gateway counted its own write
    assert Page.objects.filter(name="made-by-child").exists()
    assert connection.gateway().state.value == "running"


@pytest.mark.parametrize(("database", "message"), [
    ({"NAME": ":memory:"}, "needs a database file"),
    ({"OPTIONS": {"init_command": "PRAGMA synchronous = OFF"}}, r'OPTIONS\["synchronous"\]'),
    ({"OPTIONS": {"init_command": "PRAGMA journal_mode = DELETE"}}, "always uses WAL"),
    ({"OPTIONS": {"init_command": "PRAGMA cache_size = -4096"}}, "run_exclusive"),
    ({"OPTIONS": {"transaction_mode": "DEFERRED"}}, "holds the writer from its start"),
    ({"OPTIONS": {"isolation_level": None}}, "shares its connections itself"),
    ({"OPTIONS": {"queue_sz": 10}}, "'queue_sz', which is no gateway option"),
    ({"OPTIONS": {"readers": -1}}, "readers"),
])
def test_settings_the_backend_cannot_honour_fail_at_start_up(
        django_env: Path, database: dict[str, Any], message: str) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.db.utils import ConnectionHandler

    path = django_env / "never-made.sqlite3"
    handler = ConnectionHandler({"default": {"ENGINE": "sqlite_gateway.integrations.django",
                                         "NAME": str(path), **database}})
    with pytest.raises(ImproperlyConfigured, match=message):
        handler["default"]
    assert not path.exists()  # checked before anything was opened


def test_without_django_the_import_error_names_the_extra() -> None:
    from conftest import run_python

    done = run_python(
        "import sys\n"
        "sys.modules['django'] = None  # as if it were not installed\n"
        "try:\n"
        "    import sqlite_gateway.integrations.django\n"
        "except ImportError as exc:\n"
        "    print(exc)\n")
    assert done.returncode == 0, done.stderr
    assert "pip install 'sqlite-gateway[django]'" in done.stdout
