"""Talking to the venue: EST (RFC 7030) for the certificate, the RFQ API with it. Keys are
made and kept here; only CSRs (public keys) leave the machine."""

import base64
import fcntl
import json
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from keyline_client.config import Config

TIMEOUT = httpx.Timeout(30.0, read=40.0)


class VenueError(Exception):
    """A refusal or failure, as one line: the venue's code and message when it gave them."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Pending:
    """The venue has the request and will answer it later (EST 202 + Retry-After)."""

    retry_after: int
    message: str


# --- files --------------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a whole file or nothing: a temporary file in the same directory, flushed, then
    renamed over the old one, so a reader (or a crash) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pending_key(config: Config) -> ec.EllipticCurvePrivateKey:
    """The key of the request in progress: the one kept from an unanswered request, else a
    new EC P-256 key (what the CA's csrattrs asks for), saved 0600 before anything is sent."""
    path = config.pending_key_file
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(loaded, ec.EllipticCurvePrivateKey):
            return loaded
    key = ec.generate_private_key(ec.SECP256R1())
    write_atomically(path, key_pem(key), 0o600)
    return key


def csr_der(key: ec.EllipticCurvePrivateKey, trader_id: str) -> bytes:
    """A CSR for ``key``. The CA takes only the key (and checks the signature): the subject
    it issues comes from the venue's records."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, trader_id)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def certificate(config: Config) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(config.cert_file.read_bytes())
    except FileNotFoundError:
        raise VenueError(
            "NO_CERTIFICATE", f"no certificate at {config.cert_file}: enroll first"
        ) from None


def lifetime_left(cert: x509.Certificate, now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    total = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
    return max(0.0, (cert.not_valid_after_utc - now).total_seconds()) / total


# --- HTTP ---------------------------------------------------------------------------------------


def client(config: Config, *, with_certificate: bool) -> httpx.Client:
    """An HTTPS client trusting the venue's root; with this machine's certificate for mutual
    TLS when ``with_certificate``."""
    try:
        context = ssl.create_default_context(cafile=str(config.ca_file))
    except FileNotFoundError:
        raise VenueError("NO_CA_FILE", f"no venue root at {config.ca_file}") from None
    if with_certificate:
        if not config.key_file.exists() or not config.cert_file.exists():
            raise VenueError(
                "NO_CERTIFICATE", f"no key or certificate at {config.key_file}: enroll first"
            )
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
    return httpx.Client(base_url=config.api_url, verify=context, timeout=TIMEOUT)


def _refusal(response: httpx.Response) -> VenueError:
    """EST answers ``CODE: message`` in text; the API ``{"code", "message"}`` in JSON."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        try:
            body = response.json()
            return VenueError(body["code"], body.get("message", ""), response.status_code)
        except (ValueError, KeyError, TypeError):
            pass
    text = response.text.strip().splitlines()[0] if response.text.strip() else ""
    code, colon, message = text.partition(": ")
    if colon and code.isupper():
        return VenueError(code, message, response.status_code)
    return VenueError(f"HTTP_{response.status_code}", text[:200] or response.reason_phrase)


def _certs_only(response: httpx.Response) -> list[x509.Certificate]:
    der = base64.b64decode(b"".join(response.content.split()))
    return pkcs7.load_der_pkcs7_certificates(der)


def _enroll_call(
    http: httpx.Client, path: str, csr: bytes, auth: tuple[str, str] | None
) -> x509.Certificate | Pending:
    response = http.post(
        path,
        content=base64.encodebytes(csr),
        headers={"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"},
        auth=auth,
    )
    if response.status_code == 202:
        retry = _retry_after(response.headers.get("retry-after", ""))
        return Pending(retry, response.text.strip())
    if response.status_code != 200:
        raise _refusal(response)
    (issued,) = _certs_only(response)
    return issued


def _retry_after(value: str) -> int:
    """Retry-After in seconds (RFC 9110 allows a delay or an HTTP date); 60 when unreadable."""
    value = value.strip()
    if value.isdigit():
        return max(1, int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 60
    return max(1, int((when - datetime.now(UTC)).total_seconds()))


# Refusals after which the venue still holds a request for the pending key: keep the key, so
# that the next ask (the same request) collects its answer.
STILL_HELD = {"CSR_ALREADY_SUBMITTED"}


def _definitive(
    config: Config, call: Callable[[], x509.Certificate | Pending]
) -> x509.Certificate | Pending:
    """A refused request is over: its pending key goes (the next request makes a new one);
    a request the venue holds (202, or a refusal in ``STILL_HELD``), or one that never got an
    answer, keeps it."""
    try:
        return call()
    except VenueError as exc:
        if 400 <= exc.status < 500 and exc.code not in STILL_HELD:
            config.pending_key_file.unlink(missing_ok=True)
        raise


@contextmanager
def locked(config: Config) -> Iterator[None]:
    """One enrollment or renewal at a time on this machine for these files (a daemon and a
    person, or two cron jobs): an exclusive ``flock`` on ``<key_file>.lock``."""
    path = config.key_file.with_name(config.key_file.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def finish_interrupted_install(config: Config) -> x509.Certificate | None:
    """A run stopped between writing the certificate and moving its key into place leaves a
    certificate for the pending key: finish the move (no need to ask the venue again)."""
    if not (config.pending_key_file.exists() and config.cert_file.exists()):
        return None
    cert = x509.load_pem_x509_certificate(config.cert_file.read_bytes())
    loaded = serialization.load_pem_private_key(config.pending_key_file.read_bytes(), None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not _same_key(cert, loaded):
        return None
    os.replace(config.pending_key_file, config.key_file)
    os.chmod(config.key_file, 0o600)
    return cert


def chain(http: httpx.Client) -> list[x509.Certificate]:
    """The venue's client chain (EST cacerts, in whatever order the PKCS#7 set holds them):
    the issuing CA first, then the root, as a chain file lists them."""
    response = http.get("/.well-known/est/cacerts")
    if response.status_code != 200:
        raise _refusal(response)
    certs = _certs_only(response)
    return sorted(certs, key=lambda c: c.issuer == c.subject)  # the self-signed root last


def install(config: Config, issued: x509.Certificate, ca_chain: list[x509.Certificate]) -> None:
    """Chain, certificate, then key, each replaced atomically; the pending key becomes the
    key. A crash in between leaves the pending key, so the next run polls the same request
    and finishes the job."""
    pem = serialization.Encoding.PEM
    write_atomically(config.chain_file, b"".join(c.public_bytes(pem) for c in ca_chain))
    write_atomically(config.cert_file, issued.public_bytes(pem))
    os.replace(config.pending_key_file, config.key_file)
    os.chmod(config.key_file, 0o600)


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _est_request(
    config: Config, path: str, auth: tuple[str, str] | None
) -> x509.Certificate | Pending:
    """One EST request for the pending key, and the files installed once it is answered.
    With ``auth`` (trader id, token) it goes without a client certificate, else with it."""
    if (finished := finish_interrupted_install(config)) is not None:
        return finished
    key = pending_key(config)
    csr = csr_der(key, config.trader_id)
    with client(config, with_certificate=auth is None) as http:
        outcome = _definitive(config, lambda: _enroll_call(http, path, csr, auth))
        if isinstance(outcome, Pending):
            return outcome
        if not _same_key(outcome, key):
            raise VenueError("WRONG_KEY", "the venue answered with a certificate for another key")
        install(config, outcome, chain(http))
    return outcome


def enroll(config: Config, token: str) -> x509.Certificate | Pending:
    """EST simpleenroll with the one-time token (HTTP Basic: trader id and token)."""
    return _est_request(config, "/.well-known/est/simpleenroll", (config.trader_id, token))


def renew(config: Config) -> x509.Certificate | Pending:
    """EST simplereenroll, authenticated by the current certificate, with a new key."""
    return _est_request(config, "/.well-known/est/simplereenroll", None)


def api(config: Config, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call of the RFQ API with this machine's certificate; the JSON answer."""
    with client(config, with_certificate=True) as http:
        response = http.request(method, "/api/v1/" + path.lstrip("/"), json=body)
    if response.status_code >= 400:
        raise _refusal(response)
    return response.json()


def stream(config: Config, since: int) -> Iterator[dict[str, Any]]:
    """The event feed as Server-Sent Events (``/api/v1/events/stream/``), from after
    ``since``, for ever: each event as the API renders it (``seq``, ``type``, ``data``). The
    venue ends a stream after a few minutes on purpose; this reconnects with
    ``Last-Event-ID``, as an EventSource does. A refusal mid-stream (the certificate revoked)
    arrives as an ``error`` event and raises."""
    with client(config, with_certificate=True) as http:
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(since)}
            with http.stream(
                "GET", "/api/v1/events/stream/", headers=headers, timeout=httpx.Timeout(30.0)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _refusal(response)
                for kind, data in _frames(response.iter_lines()):
                    if kind == "error":
                        raise VenueError(data["code"], data.get("message", ""), 401)
                    since = data["seq"]
                    yield data


def long_poll(config: Config, since: int) -> Iterator[dict[str, Any]]:
    """The same events through the long-poll (``/api/v1/events/``), for ever."""
    with client(config, with_certificate=True) as http:
        while True:
            response = http.get("/api/v1/events/", params={"since": since, "wait": 20})
            if response.status_code >= 400:
                raise _refusal(response)
            page = response.json()
            yield from page["events"]
            since = page["next_since"]


def _frames(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, parsed data) of each SSE frame; comments and ``retry:`` are skipped."""
    kind, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
