"""The call surface every gateway class offers, defined once: :class:`Database`.

:class:`~sqlite_gateway.Gateway` satisfies it, and so do the baselines the
benchmarks compare against (``benchmarks/baselines.py``). The framework
integrations type against it and take a factory, so app code written against
``Database`` runs on any of them (the demo app under the load sweep). It
is a :class:`typing.Protocol`: a class satisfies it by having these methods,
with no base class to inherit. A static type checker verifies each gateway
class against it (see the ``TYPE_CHECKING`` block at the end).

Every method is thread-safe and has the contract documented on
:class:`~sqlite_gateway.Gateway`; another class says where it differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .arguments import Params
from .failures import PostFailure
from .lifecycle import State
from .options import Timeout
from .result import Result

T = TypeVar("T")


class Database(Protocol):
    """What app code may call on a gateway, whichever class it is."""

    @property
    def state(self) -> State:
        """The lifecycle state (a snapshot)."""

    def start(self) -> Database:
        """Open what the gateway needs; return self. Once only."""

    def close(self, timeout: float | None = None) -> None:
        """Refuse new calls, finish what was accepted; idempotent."""

    def __enter__(self) -> Database: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def execute(self, sql: str, params: Params = (), *, timeout: Timeout = ...,
                priority: str = "interactive") -> Result:
        """Run ``sql`` atomically; return once committed (or read)."""

    def executemany(self, sql: str, seq_of_params: Iterable[Params], *,
                    timeout: Timeout = ..., priority: str = "interactive") -> Result:
        """Run one statement once per parameter set, all atomically."""

    def transaction(self, fn: Callable[..., T], /, *args: Any, timeout: Timeout = ...,
                    priority: str = "interactive", **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` atomically; return its value."""

    def submit(self, sql: str, params: Params = (), *, priority: str = "interactive",
               block: bool = False, timeout: float | None = None) -> Future[Result]:
        """Write-behind ``execute``: return its Future."""

    def submit_transaction(self, fn: Callable[..., T], /, *args: Any,
                           priority: str = "interactive", block: bool = False,
                           timeout: float | None = None, **kwargs: Any) -> Future[T]:
        """Write-behind ``transaction``: return its Future."""

    def post(self, sql: str, params: Params = (), *, priority: str = "interactive",
             block: bool = False, timeout: float | None = None) -> None:
        """Fire-and-forget ``execute``: failures go to :meth:`failures`."""

    def failures(self) -> list[PostFailure]:
        """The :meth:`post` failures since the last call (each returned once)."""

    def flush(self, timeout: Timeout = ...) -> None:
        """Return once every call accepted before it is committed or failed."""

    def run_exclusive(self, fn: Callable[..., T], /, *args: Any, timeout: Timeout = ...,
                      priority: str = "interactive", **kwargs: Any) -> T:
        """Run ``fn(apsw_connection, ...)`` outside any transaction; return its value."""

    def bulk(self, sql: str, seq_of_params: Iterable[Params], *, timeout: Timeout = ...,
             priority: str = "background") -> int:
        """Run one statement per parameter set in slices; return the rows changed."""

    def stats(self) -> dict[str, Any]:
        """Figures since start (approximate: a snapshot); ``"state"`` among them."""


if TYPE_CHECKING:  # checked by mypy only: the gateway class has the Database surface
    from .gateway import Gateway

    def _conforms(gateway: Gateway) -> Database:
        return gateway
