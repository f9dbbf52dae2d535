# The Celery app is loaded with Django, as Celery's Django guide does, so that tasks enqueued
# from web processes use it.
from config.celery import app as celery_app

__all__ = ["celery_app"]
