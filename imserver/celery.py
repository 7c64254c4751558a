"""The Celery application. Eager (in-process) unless REDIS_URL names a broker."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imserver.settings")

app = Celery("imserver")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
