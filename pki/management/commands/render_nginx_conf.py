import os
import re
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandParser

from pki.conf import pki_settings
from pki.keystore import atomic_write
from pki.management.commands._base import KeylineCommand

TEMPLATE = Path(settings.BASE_DIR) / "deploy" / "nginx" / "keyline.conf.template"
MIME_TYPES = Path("/etc/nginx/mime.types")  # Debian's nginx-common
API_MAX_BODY_BYTES = 1_048_576  # the largest body nginx forwards (the portal has its own)


class Command(KeylineCommand):
    help = (
        "Write the nginx configuration of the mTLS terminator (deploy/nginx/"
        "keyline.conf.template): the RFQ API with client certificates, the portal, and "
        "CRL/OCSP over plain HTTP. The file holds the terminator secret and is written 0600."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        ca = pki_settings().ca_dir
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--prefix", type=Path, help="pid and logs (default: beside --out)")
        parser.add_argument(
            "--temp-dir",
            type=Path,
            help="request bodies and proxy buffers, written by nginx's (unprivileged) workers; "
            "default: PREFIX/tmp",
        )
        parser.add_argument(
            "--mime-types",
            type=Path,
            default=MIME_TYPES,
            help="nginx's MIME type table (without it stylesheets are served as text/plain, and "
            "browsers ignore them)",
        )
        parser.add_argument("--api-listen", default="127.0.0.1:8443")
        parser.add_argument("--portal-listen", default="127.0.0.1:8444")
        parser.add_argument("--pki-listen", default="127.0.0.1:8080")
        parser.add_argument(
            "--app-upstream",
            default="unix:" + str(Path(settings.BASE_DIR) / "var" / "run" / "gunicorn.sock"),
            help="gunicorn: unix:/path/to.sock (preferred) or 127.0.0.1:port",
        )
        parser.add_argument(
            "--ocsp-upstream", help="the OCSP responder (pki.ocsp_asgi); default: the app"
        )
        parser.add_argument(
            "--events-upstream",
            help="gunicorn with threads for /api/v1/events/ (long-polls, SSE); default: the app",
        )
        parser.add_argument("--server-cert", type=Path, required=True, help="full chain PEM")
        parser.add_argument("--server-key", type=Path, required=True)
        parser.add_argument(
            "--client-ca-chain", type=Path, default=ca / "certs" / "client-chain.pem"
        )
        parser.add_argument("--crl-bundle", type=Path, default=ca / "crl" / "bundle.pem")
        parser.add_argument(
            "--ocsp",
            action="store_true",
            help="also check client certificates with ssl_ocsp against our responder",
        )
        parser.add_argument(
            "--static-root", type=Path, default=Path(settings.STATIC_ROOT), help="collectstatic"
        )
        parser.add_argument("--session-timeout", default="5m")
        parser.add_argument("--workers", default="auto")

    def handle(self, *args: Any, **options: Any) -> None:
        secret = settings.KEYLINE_TERMINATOR_SECRET
        if not re.fullmatch(r"[A-Za-z0-9_-]{32,}", secret):
            raise ImproperlyConfigured(
                "KEYLINE_TERMINATOR_SECRET must be at least 32 characters of A-Z, a-z, 0-9, '-' "
                "and '_' (it is written into the nginx configuration), e.g. "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        out: Path = options["out"].resolve()
        prefix: Path = (options["prefix"] or out.parent).resolve()
        temp: Path = (options["temp_dir"] or prefix / "tmp").resolve()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (temp / sub).mkdir(parents=True, exist_ok=True)
        for name in ("server_cert", "server_key", "client_ca_chain", "crl_bundle"):
            if not options[name].is_file():
                raise ImproperlyConfigured(f"--{name.replace('_', '-')}: no file {options[name]}")
        ocsp_path = urlsplit(pki_settings().ocsp_url).path.rstrip("/")
        ocsp_directives, ocsp_note = "", ""
        if options["ocsp"]:
            ocsp_note = " and, per handshake, with our OCSP responder"
            ocsp_directives = "\n".join(
                [
                    "        ssl_ocsp leaf;",
                    f"        ssl_ocsp_responder http://{options['pki_listen']}{ocsp_path};",
                    "        ssl_ocsp_cache shared:keyline_ocsp:10m;",
                    "        # ssl_ocsp has no timeout of its own: a hanging responder holds the",
                    "        # handshake until client_header_timeout (deploy/README.md).",
                    "        client_header_timeout 10s;",
                ]
            )
        text = Template(TEMPLATE.read_text()).substitute(
            prefix=prefix,
            temp_dir=temp,
            api_max_body_bytes=API_MAX_BODY_BYTES,
            mime_types=options["mime_types"],  # read by nginx, maybe on another host
            worker_processes=options["workers"],
            app_upstream=options["app_upstream"],
            ocsp_upstream=options["ocsp_upstream"] or options["app_upstream"],
            events_upstream=options["events_upstream"] or options["app_upstream"],
            server_certificate=options["server_cert"].resolve(),
            server_key=options["server_key"].resolve(),
            client_ca_chain=options["client_ca_chain"].resolve(),
            crl_bundle=options["crl_bundle"].resolve(),
            api_listen=options["api_listen"],
            portal_listen=options["portal_listen"],
            pki_listen=options["pki_listen"],
            ocsp_path=ocsp_path,
            ocsp_directives=ocsp_directives,
            ocsp_note=ocsp_note,
            session_timeout=options["session_timeout"],
            static_root=options["static_root"].resolve(),
            header_secret=settings.KEYLINE_HEADER_SECRET,
            header_verify=settings.KEYLINE_HEADER_VERIFY,
            header_cert=settings.KEYLINE_HEADER_CERT,
            terminator_secret=secret,
        )
        atomic_write(out, text.encode(), mode=0o600)
        os.chmod(out, 0o600)
        self.stdout.write(f"nginx configuration written to {out} (mode 600); prefix {prefix}")
        self.stdout.write(f"  start:  nginx -p {prefix} -c {out}")
        self.stdout.write(f"  reload: nginx -p {prefix} -c {out} -s reload")
