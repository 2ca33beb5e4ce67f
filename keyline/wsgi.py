"""WSGI entry point for gunicorn (deploy/gunicorn.conf.py) and runserver.

Requests for the OCSP URL's path go to the bare responder (``pki.ocsp_http``) before Django.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "keyline.settings")

django_application = get_wsgi_application()

from pki.ocsp_http import with_ocsp  # noqa: E402 - needs the settings configured above

application = with_ocsp(django_application)

# Everything loaded so far lives as long as the process: move it out of the collector's sight,
# so a full collection scans only what requests create (bench/bench_rfq.py: full collections
# of ~150k start-up objects took 40-120 ms and set the list's p99).
gc.collect()
gc.freeze()
