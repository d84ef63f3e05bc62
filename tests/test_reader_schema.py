"""A reader whose copy of the schema predates a change made on the writer."""

from __future__ import annotations

from sqlite_gateway import Gateway


def test_an_upsert_on_a_new_index_goes_to_the_writer_not_a_stale_reader(db_path):
    with Gateway(db_path, readers=1) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b INTEGER)")
        assert db.execute("SELECT count(*) FROM t").scalar() == 0  # the reader loads the schema
        db.execute("CREATE UNIQUE INDEX t_a ON t(a)")  # on the writer
        upsert = "INSERT INTO t(a, b) VALUES (?, 1) ON CONFLICT (a) DO UPDATE SET b = b + 1"
        db.execute(upsert, ("x",))  # the reader cannot prepare it with its old schema
        db.execute(upsert, ("x",))
        assert db.execute("SELECT a, b FROM t").rows == (("x", 2),)
        assert db.stats()["reads_to_writer"] >= 1
