"""Answers from the gateway's threads to an asyncio event loop, and the waits on them.

The worker (or a read thread) completes a ``concurrent.futures.Future``; a
done-callback hands the outcome to the loop that awaits it. Nothing here
parks a thread, and nothing here keeps a loop alive: a loop closed while
answers were on their way to it is freed with them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class _Inbox:
    """Answers for one event loop from other threads, delivered in one wake-up per burst.

    The worker answers a whole batch at once. One ``call_soon_threadsafe`` per
    answer would write to the loop's wake-up pipe once each, and every such
    write lets the GIL go: the worker could then wait a switch interval
    (5 ms) for the busy loop thread to give it back, per answer. So answers
    queue here, and only the first of a burst wakes the loop.

    The inbox lives as long as something holds it: a request's done-callback
    (an answer is on its way) or the drain scheduled on the loop. The registry
    holds it weakly, because its items hold their loop (each waiter does): a
    loop closed with a drain scheduled and never run was kept forever by a
    registry that held the inbox.
    """

    __slots__ = ("__weakref__", "_lock", "_loop", "_items", "_scheduled", "_closed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: the inbox must not keep its loop alive
        # _lock guards _items, _scheduled and _closed.
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Future[Any], Future[Any]]] = []
        self._scheduled = False  # a drain is scheduled on the loop and has not run yet
        self._closed = False  # the loop was found closed: answers are dropped

    def post(self, waiter: asyncio.Future[Any], done: Future[Any]) -> None:
        """From any thread: have ``waiter`` settled from ``done`` on the loop; never raises."""
        with self._lock:
            if self._closed:
                return
            self._items.append((waiter, done))
            if self._scheduled:
                return
            self._scheduled = True
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("the event loop is gone")
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody can await these answers any more
            with self._lock:
                self._closed = True
                self._items.clear()

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for waiter, done in items:
            settle(waiter, done)


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[_Inbox]] = (
    weakref.WeakKeyDictionary())
_inboxes_lock = threading.Lock()  # held while adding an inbox


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    ref = _inboxes.get(loop)
    inbox = None if ref is None else ref()
    if inbox is None:
        with _inboxes_lock:
            ref = _inboxes.get(loop)
            inbox = None if ref is None else ref()
            if inbox is None:
                inbox = _Inbox(loop)
                _inboxes[loop] = weakref.ref(inbox)
    return inbox


def bridge(future: Future[T]) -> asyncio.Future[T]:
    """An asyncio future on the running loop that follows ``future``.

    The answer reaches the loop through its :class:`_Inbox` (no thread is
    parked waiting). Cancelling the asyncio future cancels ``future``, which
    stops the request only if it has not started.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    post = _inbox(loop).post

    def cancel_source(settled: asyncio.Future[T]) -> None:
        if settled.cancelled():
            future.cancel()

    waiter.add_done_callback(cancel_source)
    future.add_done_callback(lambda done: post(waiter, done))
    return waiter


def settle(waiter: asyncio.Future[T], done: Future[T]) -> None:
    """On the loop: copy the outcome of ``done`` into ``waiter`` (unless it is settled)."""
    if waiter.done():
        return
    if done.cancelled():
        waiter.cancel()
        return
    exc = done.exception()
    if exc is None:
        waiter.set_result(done.result())
        return
    try:
        waiter.set_exception(exc)  # the worker's exception object itself
    except TypeError:  # asyncio refuses StopIteration in a future
        waiter.set_exception(RuntimeError(f"the request raised {exc!r}"))


class TimedOut(Exception):
    """Set on a waiter whose wait ran out (never leaves the asyncio door)."""


def time_out(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimedOut())


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``; on Python 3.10 (no add_note) the same list by hand."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            setattr(exc, "__notes__", notes)  # noqa: B010 (no such attribute on 3.10)
        notes.append(note)
