"""What the gateway learned about a SQL text, kept within a memory bound.

The gateway remembers, per SQL text, what SQLite told it the first time: a
reader judged it read-only (and whether it is one statement), the writer ran
it as one statement, a reader declined it as a write. Texts come from callers
and may be long (an ``IN`` list of thousands of values), so the bound is on
bytes as well as on entries: 1,200 distinct 48 KB texts once kept 113 MB
alive under a bound of 4,096 entries.
"""

from __future__ import annotations

import sys
import threading
from typing import Generic, TypeVar

V = TypeVar("V")

_MAX_ITEMS = 4096
_MAX_BYTES = 2 * 1024 * 1024  # the texts' own size (sys.getsizeof), per memo
_MAX_TEXT = _MAX_BYTES // 32  # a longer text is never kept: it pays its first-run cost each time


class TextMemo(Generic[V]):
    """A dict from SQL text to what was learned of it, cleared when full.

    Thread-safe. Lookups read :attr:`map` directly (a plain dict: the hot
    path pays nothing for the bound); :meth:`remember` and :meth:`forget`
    take ``_lock``, which guards ``_bytes`` and every change to ``map``.
    """

    __slots__ = ("map", "_bytes", "_lock")

    def __init__(self) -> None:
        self.map: dict[str, V] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, text: str, value: V) -> None:
        """Keep ``value`` for ``text``, unless ``text`` is too long to keep."""
        size = sys.getsizeof(text)
        if size > _MAX_TEXT:
            return
        with self._lock:
            known = self.map
            if text not in known:
                if len(known) >= _MAX_ITEMS or self._bytes + size > _MAX_BYTES:
                    known.clear()  # a working set beyond the bound: start again
                    self._bytes = 0
                self._bytes += size
            known[text] = value

    def forget(self, text: str) -> None:
        with self._lock:
            if self.map.pop(text, None) is not None:
                self._bytes -= sys.getsizeof(text)
