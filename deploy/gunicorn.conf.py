"""gunicorn for the portal and the API (systemd: keyline-web.service).

Bound to a unix socket only: nginx is the only way in, so the terminator's headers can be
trusted (with the secret) and nothing reaches the app around the mTLS check.
"""

import multiprocessing
import os

bind = [os.environ.get("KEYLINE_GUNICORN_BIND", "unix:/run/keyline/gunicorn.sock")]
# The socket is group-writable for nginx (www-data is in the keyline group), nobody else.
umask = 0o007
workers = int(os.environ.get("KEYLINE_GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
# The portal and the API: sync workers (bench/bench_rfq.py: 177 against 137 RFQ creates/s for
# gthread). The event feed (long-polls up to 25 s, SSE streams up to 5 min) runs in a second
# pool (keyline-events.service) with KEYLINE_GUNICORN_WORKER_CLASS=gthread and threads: each
# waiting client holds a thread, so workers x threads bounds the connected feeds.
worker_class = os.environ.get("KEYLINE_GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("KEYLINE_GUNICORN_THREADS", 1))
timeout = 30
graceful_timeout = 20
keepalive = 5  # nginx keeps upstream connections (keepalive 16)
max_requests = 5000
max_requests_jitter = 500
control_socket_disable = True
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}i)s'
errorlog = "-"
wsgi_app = "keyline.wsgi:application"
