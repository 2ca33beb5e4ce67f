"""OCSP over HTTP (RFC 6960 Appendix A, RFC 5019): a bare WSGI application.

``keyline.wsgi`` routes requests for the OCSP URL's path here before Django, so the responder
skips Django's middleware, URL resolver and request objects (the lean hot path: a trivial Django
view manages about 1,700 requests/s here). ``pki.views.ocsp`` serves the same function inside
Django for servers that do not use ``keyline.wsgi`` (e.g. the test client).
"""

import base64
import binascii
from collections.abc import Callable, Iterable
from urllib.parse import unquote

from django.db import close_old_connections

from pki.conf import pki_settings
from pki.ocsp import MAX_REQUEST_BYTES, Answer, respond

METHOD_NOT_ALLOWED = [("Allow", "GET, POST"), ("Content-Length", "0")]


def answer_for(method: str, tail: str, body: Callable[[int], bytes], length: int) -> Answer | None:
    """The answer for one HTTP request, or None for a method other than GET and POST.

    GET carries the base64 DER request in the path after the OCSP URL (URL-escaped or not);
    POST carries it as the body (``application/ocsp-request``)."""
    if method == "POST":
        if not 0 < length <= MAX_REQUEST_BYTES:
            return respond(b"")
        return respond(body(length))
    if method == "GET":
        return respond(get_request_bytes(tail))
    return None


def get_request_bytes(tail: str) -> bytes:
    """The DER request a GET carries after the OCSP path: base64, URL-escaped or not (RFC 6960
    Appendix A.1); empty (answered as malformedRequest) when it is not base64."""
    try:
        return base64.b64decode(unquote(tail.lstrip("/")), validate=True)
    except (binascii.Error, ValueError):
        return b""


def ocsp_path() -> str:
    """The path this deployment answers OCSP at: ``KEYLINE_OCSP_URL``'s, like nginx's route.

    Certificates carry their CA's OCSP URL (``CertificateAuthority.ocsp_url``), not this
    setting; ``set_ca_urls`` refuses a CA OCSP URL with another path, so a CA whose host or
    port moved is still answered here, and the ``pki.W002`` check flags a CA left on a path
    after the setting moved. Only the path matters: a request is answered whatever host or
    port it was sent to. (``pki_settings()`` is cached, so this costs no parsing per request.)
    """
    return pki_settings().ocsp_path


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    # What Django's request_started signal does: drop a broken or over-age DB connection.
    close_old_connections()
    path = environ.get("PATH_INFO", "")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    answer = answer_for(
        environ["REQUEST_METHOD"],
        path[len(ocsp_path()) :],
        environ["wsgi.input"].read,
        length,
    )
    if answer is None:
        start_response("405 Method Not Allowed", METHOD_NOT_ALLOWED)
        return [b""]
    start_response("200 OK", answer.headers())
    return [answer.body]


def with_ocsp(django_app: Callable) -> Callable:
    """Wrap the Django WSGI application: the OCSP path goes to :func:`application`."""

    def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        prefix = ocsp_path()
        if path == prefix or path.startswith(prefix + "/"):
            return application(environ, start_response)
        return django_app(environ, start_response)

    return dispatch
