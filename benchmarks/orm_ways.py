"""The page-view transaction through an ORM, each way orm_pageview.py measures.

One operation (the same ORM code on every way of one ORM): in one transaction,
load the page's counter row through the ORM, add one to it in Python, and add a
log row (``session.get`` + ``+= 1`` + ``session.add`` in SQLAlchemy;
``get_by_id`` + ``save()`` + ``create()`` in peewee). The ORMs send a SELECT,
an INSERT and an UPDATE. A read is one ORM point read of a counter
(``session.get`` in a fresh Session; ``Model.get_by_id`` outside a transaction).
The tables are those of ``workloads.py`` (``pages``, ``views``), made by the parent.

The ways (synchronous FULL and a 5 s busy timeout on every one):

- ``stock``: the ORM on the stdlib ``sqlite3`` with the best-known settings: WAL,
  ``timeout=5``, ``BEGIN IMMEDIATE`` by SQLAlchemy's documented event recipe
  (``isolation_level = None`` on connect + a ``begin`` event), or peewee's
  ``db.atomic('IMMEDIATE')``; SQLAlchemy's pool holds a connection per thread.
  A "database is locked" is counted and reported, never retried;
- ``gateway``: the same ORM code; only the URL (``sqlite+gateway:///...?begin=immediate``)
  or the Database class (``GatewayDatabase``, same arguments) changes. The
  transaction is a write block held from its first statement: the guarantee of
  ``stock``;
- ``gateway-fn``: the same function inside one gateway transaction fn:
  ``run_in_transaction(engine, fn)`` for SQLAlchemy; for peewee, which has no
  such helper, ``gateway.transaction`` with the DB-API module's ``bound_to``
  around the unchanged ``atomic()`` code (there it is a savepoint);
- ``stock-read`` / ``gateway-read``: point reads on each side's default engine
  (stock: no BEGIN IMMEDIATE recipe, which would make reads take the write
  lock; gateway: ``begin=deferred``, reads on the gateway's readers: its default
  8, or ``--readers``).

A stock way runs in a process that never opens the file with apsw, and a
gateway way in one that never opens it with ``sqlite3``.
"""

from __future__ import annotations

from typing import Any

from .strategies import Strategy

ORMS = ("sqlalchemy", "peewee")
WRITE_WAYS = ("stock", "gateway", "gateway-fn")
READ_WAYS = ("stock-read", "gateway-read")
BUSY_TIMEOUT_S = 5


class OrmWay(Strategy):
    """One ORM, one way: ``write_fn`` is one page-view transaction, ``read`` one
    point read of ``params[0]``'s counter (the ORM writes its own SQL)."""

    def __init__(self, path: str, write: Any, read: Any, close: Any) -> None:
        super().__init__(path, "FULL")
        self._write, self._read, self._close = write, read, close
        self.locked = 0  # "database is locked" errors seen (never retried)

    def write_fn(self, page: str, ts: float) -> None:
        try:
            self._write(page, ts)
        except Exception as exc:
            self.locked += "database is locked" in str(exc)
            raise

    def read(self, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            return self._read(params[0])
        except Exception as exc:
            self.locked += "database is locked" in str(exc)
            raise

    def enter_thread(self) -> None:
        self._read("p0")  # the thread's connection (and reader) open before the clock

    def close(self) -> None:
        self._close()

    def figures(self) -> dict[str, Any]:
        return {"locked": self.locked}


def make_way(orm: str, way: str, path: str, threads: int, readers: int | None = None) -> OrmWay:
    """The strategy for one cell (imports the ORM: call it in the cell's child);
    ``readers`` sets the gateway's readers (None: its default, 8)."""
    return (_sqlalchemy if orm == "sqlalchemy" else _peewee)(way, path, threads, readers)


def _sqlalchemy(way: str, path: str, threads: int, readers: int | None) -> OrmWay:
    from sqlalchemy import Float, Integer, String, create_engine, event
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    class Base(DeclarativeBase):
        pass

    class Page(Base):
        __tablename__ = "pages"
        # Columns typed explicitly: annotations are strings here (a local class).
        name = mapped_column(String, primary_key=True)
        views = mapped_column(Integer, nullable=False)

    class PageView(Base):
        __tablename__ = "views"
        id = mapped_column(Integer, primary_key=True)
        page = mapped_column(String, nullable=False)
        ts = mapped_column(Float, nullable=False)

    def record(session: Session, page: str, ts: float) -> None:
        counter = session.get(Page, page)
        assert counter is not None
        counter.views += 1
        session.add(PageView(page=page, ts=ts))

    if way.startswith("stock"):
        # Each thread keeps a connection: the default pool (5 + 10) would make 32 wait.
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S},
                               pool_size=threads, max_overflow=threads)

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below)
            for pragma in ("journal_mode=WAL", "synchronous=FULL"):
                dbapi_connection.execute(f"PRAGMA {pragma}").fetchall()

        if way == "stock":  # the recipe; reads go without it (it would lock them too)
            @event.listens_for(engine, "begin")
            def on_begin(connection: Any) -> None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        begin = "deferred" if way == "gateway-read" else "immediate"
        engine = create_engine(f"sqlite+gateway:///{path}?begin={begin}&synchronous=FULL"
                               f"&busy_timeout={BUSY_TIMEOUT_S}"
                               + (f"&readers={readers}" if readers else ""))

    def write(page: str, ts: float) -> None:
        with Session(engine) as session, session.begin():
            record(session, page, ts)

    if way == "gateway-fn":
        from sqlite_gateway.integrations.sqlalchemy import run_in_transaction

        def write(page: str, ts: float) -> None:
            run_in_transaction(engine, record, page, ts)

    def read(page: str) -> int:
        with Session(engine) as session:
            counter = session.get(Page, page)
            assert counter is not None
            return counter.views

    return OrmWay(path, write, read, engine.dispose)


def _peewee(way: str, path: str, threads: int, readers: int | None) -> OrmWay:
    import peewee

    # The same arguments for both classes: only the class changes.
    settings: dict[str, Any] = {"pragmas": {"journal_mode": "wal", "synchronous": "full"},
                                "timeout": BUSY_TIMEOUT_S}
    if way.startswith("stock"):
        db = peewee.SqliteDatabase(path, **settings)
    else:
        from sqlite_gateway.integrations.peewee import GatewayDatabase

        db = GatewayDatabase(path, **settings, **({"readers": readers} if readers else {}))

    class Page(peewee.Model):
        name = peewee.CharField(primary_key=True)
        views = peewee.IntegerField()

        class Meta:
            database = db
            table_name = "pages"

    class PageView(peewee.Model):
        page = peewee.CharField()
        ts = peewee.FloatField()

        class Meta:
            database = db
            table_name = "views"

    def record(page: str, ts: float) -> None:
        with db.atomic("IMMEDIATE"):
            counter = Page.get_by_id(page)
            counter.views += 1
            counter.save()
            PageView.create(page=page, ts=ts)

    write = record
    if way == "gateway-fn":
        from sqlite_gateway.integrations import dbapi

        gateway = db.gateway  # type: ignore[attr-defined]

        def body(conn: Any, page: str, ts: float) -> None:
            with dbapi.bound_to(gateway, conn):
                record(page, ts)

        def write(page: str, ts: float) -> None:
            gateway.transaction(body, page, ts)

    def read(page: str) -> int:
        return int(Page.get_by_id(page).views)

    return OrmWay(path, write, read, db.close)
