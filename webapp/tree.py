"""The URL tree, for CherryPy's ``MethodDispatcher``.

Each path is a resource object whose upper-case methods (``GET``, ``POST``)
are its HTTP methods: MethodDispatcher calls the one the request names, and
answers 405 with ``Allow`` (the resource's methods, HEAD with GET) otherwise.

Fixed path segments are attributes (``root.api.stats.history``). A segment
that carries a name (``/api/pages/<name>``) is taken by the parent's
``_cp_dispatch``, which CherryPy calls for a segment that is not an
attribute: ``api`` has no attribute ``pages``, so ``/api/pages/<name>/view``
reaches ``Api._cp_dispatch(["pages", name, "view"])``, which takes all three
segments at once. A name is therefore never looked up as an attribute, and a
page called ``index``, ``GET``, ``__class__`` or ``_cp_dispatch`` is just a name.
"""

from __future__ import annotations

from collections.abc import Callable


class Resource:
    """A MethodDispatcher resource. ``exposed`` is set on the instance, not the
    class, so that the class object itself is never a handler."""

    def __init__(self) -> None:
        self.exposed = True


def segment(raw: str) -> str:
    """A path segment as the client meant it: the server leaves an encoded
    slash as ``%2F`` so that it does not split the path; decode it here."""
    return raw.replace("%2F", "/")


class Collection:
    """The resources under ``/api/<plural>``.

    Args:
        top: the resource at ``/api/<plural>`` itself, or None (404).
        item: makes the resource at ``/api/<plural>/<key>`` from the key.
        actions: ``{"view": factory}`` for ``/api/<plural>/<key>/view``.
    """

    def __init__(self, top: Resource | None, item: Callable[[str], Resource] | None,
                 actions: dict[str, Callable[[str], Resource]] | None = None) -> None:
        self.top = top
        self.item = item
        self.actions = actions or {}

    def resolve(self, vpath: list[str]) -> Resource | None:
        """Take the segments this collection answers for off ``vpath``; None is a 404."""
        if not vpath:
            return self.top
        key = segment(vpath.pop(0))
        if not vpath:
            return self.item(key) if self.item else None
        action = self.actions.get(vpath.pop(0))
        return action(key) if action is not None and not vpath else None


class Api:
    """``/api``: fixed resources as attributes, collections by ``_cp_dispatch``.
    Not a resource itself (``/api`` is a 404)."""

    def __init__(self, collections: dict[str, Collection], **fixed: Resource) -> None:
        self._collections = collections
        for name, resource in fixed.items():
            setattr(self, name, resource)

    def _cp_dispatch(self, vpath: list[str]) -> Resource | None:
        collection = self._collections.get(vpath[0])
        if collection is None:
            return None  # CherryPy drops the segment and finds nothing: 404
        del vpath[0]
        return collection.resolve(vpath)


class Root:
    """``/``: the home page is ``index``; ``/pages/<name>`` goes by ``_cp_dispatch``."""

    def __init__(self, index: Resource, api: Api, page: Callable[[str], Resource],
                 **fixed: Resource) -> None:
        self.index = index
        self.api = api
        # No icon (the pages say href="data:,"); present, so that tree.mount()
        # does not hang CherryPy's own favicon handler here.
        self.favicon_ico = None
        self._page = page
        for name, resource in fixed.items():
            setattr(self, name, resource)

    def _cp_dispatch(self, vpath: list[str]) -> Resource | None:
        if vpath[0] == "pages" and len(vpath) == 2:
            del vpath[0]
            return self._page(segment(vpath.pop(0)))
        return None

