"""The page-view transaction, and the view that serves it."""

import time

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from .models import Page, View


def record_view(name: str, ts: float) -> int:
    """Count one view of page ``name``; return its count.

    Read-modify-write in Python: exact on the gateway, where an atomic() block
    holds the writer from its start.
    """
    with transaction.atomic():
        page, _ = Page.objects.get_or_create(name=name)
        page.views += 1
        page.save(update_fields=["views"])
        View.objects.create(page=page, ts=ts)
    return page.views


def count(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"page": name, "views": record_view(name, time.time())})
