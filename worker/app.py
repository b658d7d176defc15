"""The Celery app that workers run: ``celery -A worker.app worker`` (or ``imggen worker``)."""

from __future__ import annotations

from celery import Celery

from producer.queue import configure
from producer.settings import get_settings

app = Celery("imggen", include=["worker.tasks"])
configure(app, get_settings())
