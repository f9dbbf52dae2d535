"""Settings of the page benchmark's servers: the streaming benchmark's (production settings,
DEBUG off), with static files served from the apps: the pages need log.js and a benchmark
database has no collectstatic."""

from tests.bench.stream_settings import *  # noqa: F403

STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
