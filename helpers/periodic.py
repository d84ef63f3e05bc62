"""PeriodicJob: run a plain function ``job(db, **settings)`` on an interval, as a bus plugin.

The job is a plain function, testable without CherryPy; this plugin only owns
its thread. The thread waits with ``Event.wait(interval)``, so the engine's
``stop`` ends it at once, not after the interval. A failing run is logged with
its traceback through ``bus.log`` and the next run still happens (contrast
CherryPy's ``BackgroundTask``: a daemon thread on ``time.sleep`` that quits on
its first error). The thread is not a daemon: ``engine.block()`` joins it, and
it always ends on ``stop``.

Configuration: ``interval`` and each of the job's settings are attributes, so
CherryPy config ``engine.<plugin>.<attr>`` changes them; a change is seen at
the next wait or run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cherrypy.process.plugins import SimplePlugin
from cherrypy.process.wspbus import Bus

CHANNEL = "sqlite-gateway"  # what GatewayPlugin publishes the running gateway on
JOIN_TIMEOUT_S = 30.0  # how long stop waits for a run in progress to end


class PeriodicJob(SimplePlugin):  # type: ignore[misc]  # cherrypy is untyped
    """Runs ``job(db, **settings)`` every ``interval`` seconds on its own thread.

    Priorities, against CherryPy's own (lower runs first): start at 70, after
    the gateway plugin (67) has opened the database; stop at 50, after the
    HTTP server (25) and before the gateway (80) drains and closes.

    Args:
        bus: the engine, or any ``wspbus.Bus``.
        job: ``job(db, **settings)``; its return value is kept as ``last_result``.
        interval: seconds between the end of one run and the start of the next.
        name: for the thread's name and the log; defaults to the job's module.
        **settings: passed to the job; each is also an attribute.
    """

    def __init__(self, bus: Bus, job: Callable[..., Any], interval: float,
                 name: str | None = None, **settings: Any) -> None:
        super().__init__(bus)
        if not callable(job):
            raise TypeError(f"job must be callable, not {type(job).__name__}")
        _check_interval(interval)
        self.job = job
        self.interval = interval
        self.name = name or getattr(job, "__module__", None) or type(self).__name__
        clashes = sorted(s for s in settings if hasattr(self, s))
        if clashes:
            raise TypeError(f"settings clash with PeriodicJob attributes: {', '.join(clashes)}")
        self._setting_names = tuple(settings)
        for key, value in settings.items():
            setattr(self, key, value)
        self.join_timeout = JOIN_TIMEOUT_S
        self.runs = 0
        self.failures = 0
        self.last_result: Any = None
        self._run_lock = threading.Lock()  # run_now() and the thread never overlap
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """The keyword arguments the next run gets (current attribute values)."""
        return {key: getattr(self, key) for key in self._setting_names}

    @property
    def thread_name(self) -> str:
        return f"periodic-job:{self.name}"

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        _check_interval(self.interval)
        self._stopping = threading.Event()  # a fresh one: a set Event would end the loop
        self._thread = threading.Thread(target=self._loop, args=(self._stopping,),
                                        name=self.thread_name, daemon=False)
        self._thread.start()
        self.bus.log(f"{self.name}: started (every {float(self.interval)} s)")

    start.priority = 70  # type: ignore[attr-defined]

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is None:
            return
        if thread is not threading.current_thread():
            thread.join(self.join_timeout)
        if thread.is_alive():
            self.bus.log(f"{self.name}: still running {self.join_timeout} s after stop; "
                         "it ends when its current run does", level=logging.ERROR)
        else:
            self.bus.log(f"{self.name}: stopped after {self.runs} runs "
                         f"({self.failures} failed)")

    stop.priority = 50  # type: ignore[attr-defined]

    def graceful(self) -> None:
        self.stop()
        self.start()

    def run_now(self) -> Any:
        """Run the job once in the caller's thread; its errors reach the caller.

        Raises:
            RuntimeError: no gateway is published on the bus.
        """
        db = self._gateway()
        if db is None:
            raise RuntimeError(f"{self.name}: no gateway on the {CHANNEL!r} channel")
        with self._run_lock:
            try:
                result = self.job(db, **self.settings)
            except BaseException:
                self.failures += 1
                raise
            finally:
                self.runs += 1
            self.last_result = result
            return result

    def _gateway(self) -> Any:
        for db in self.bus.publish(CHANNEL):
            if db is not None:
                return db
        return None

    def _loop(self, stopping: threading.Event) -> None:
        # Bounded by the stop event: each wait returns True as soon as stop sets it.
        while not stopping.wait(float(self.interval)):
            try:
                self.run_now()
            except Exception:  # noqa: BLE001 - any failure is logged; the next run still happens
                self.bus.log(f"{self.name}: run failed; the next one is in "
                             f"{float(self.interval)} s", level=logging.ERROR, traceback=True)


def _check_interval(interval: object) -> None:
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval >= 0:
        raise ValueError(f"interval must be a number of seconds >= 0, not {interval!r}")
