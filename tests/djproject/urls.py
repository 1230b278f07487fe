"""Views that enqueue tasks, as a project's views would."""

from __future__ import annotations

import json
from datetime import timedelta

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.utils import timezone
from djapp import tasks
from djapp.models import Note

ENQUEUEABLE = {
    "add": tasks.add,
    "boom": tasks.boom,
    "double": tasks.double,
    "whoami": tasks.whoami,
    "flaky": tasks.flaky,
    "touch_db": tasks.touch_db,
    "db_closed": tasks.db_closed,
    "count_notes": tasks.count_notes,
    "sleepy": tasks.sleepy,
}


def enqueue(request: HttpRequest, name: str) -> HttpResponse:
    body = json.loads(request.body or b"{}")
    task = ENQUEUEABLE[name]
    if "priority" in body:
        task = task.using(priority=body["priority"])
    if "backend" in body:
        task = task.using(backend=body["backend"])
    if "queue" in body:
        task = task.using(queue_name=body["queue"])
    if "delay_s" in body:
        task = task.using(run_after=timezone.now() + timedelta(seconds=body["delay_s"]))
    result = task.enqueue(*body.get("args", []), **body.get("kwargs", {}))
    return JsonResponse({"id": result.id, "status": str(result.status)})


def add_note(request: HttpRequest) -> HttpResponse:
    """Create a note and enqueue a task that counts the notes, in one transaction; the
    task must see the note (it is enqueued on commit). `?fail=1` rolls the whole back."""
    ids: list[str] = []
    try:
        with transaction.atomic():
            Note.objects.create(text="hello")
            ids.append(tasks.count_notes_on_commit.enqueue().id)
            if request.GET.get("fail"):
                raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    return JsonResponse({"id": ids[0]})


urlpatterns = [
    path("enqueue/<str:name>", enqueue),
    path("note", add_note),
]
