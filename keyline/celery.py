"""The Celery application. Tasks are discovered in every installed app's ``tasks`` module."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "keyline.settings")

app = Celery("keyline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
