"""Settings for bench_terminator.py only: the site plus two trivial API views, one with the
certificate authentication and one without, to price the authentication class."""

from keyline.settings import *  # noqa: F403

ROOT_URLCONF = "bench_urls"
