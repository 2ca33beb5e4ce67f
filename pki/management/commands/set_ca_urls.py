from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import CommandParser
from django.http.request import validate_host

from kernel.errors import Invalid
from pki.management.commands._base import KeylineCommand
from pki.services import (
    CA_CHOICES,
    CaUrlsChange,
    ca_urls_apply,
    ca_urls_plan,
    command_actor,
)

LABELS = (("CRL", "crl_url"), ("OCSP", "ocsp_url"), ("caIssuers", "ca_issuers_url"))


class Command(KeylineCommand):
    help = (
        "Change the CRL, OCSP and caIssuers URLs that a CA writes into the certificates it "
        "issues (they live on the CA, not in the signing process's settings). Audited; lists "
        "the live certificates that keep their old URLs until they are renewed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--ca", choices=CA_CHOICES, default="all", help="which CA to change (default: all)"
        )
        parser.add_argument(
            "--pki-url",
            metavar="URL",
            help="the PKI's public base, e.g. http://pki.example:8080/pki: gives <URL>/crl/"
            "<slug>.crl, <URL>/ocsp and <URL>/ca/<slug>.crt",
        )
        parser.add_argument("--crl-base-url", metavar="URL", help="CRLs at <URL>/<slug>.crl")
        parser.add_argument(
            "--ocsp-url", metavar="URL", help="the OCSP responder (client CA's certificates)"
        )
        parser.add_argument(
            "--ca-issuers-base-url", metavar="URL", help="CA certificates at <URL>/<slug>.crt"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would change; change nothing"
        )
        parser.add_argument(
            "--show",
            type=int,
            default=10,
            metavar="N",
            help="list at most N certificates per CA that keep other URLs (default 10)",
        )

    def handle(
        self,
        *args: Any,
        ca: str,
        pki_url: str | None,
        crl_base_url: str | None,
        ocsp_url: str | None,
        ca_issuers_base_url: str | None,
        dry_run: bool,
        show: int,
        **options: Any,
    ) -> None:
        if show < 0:
            raise Invalid("SHOW_INVALID", f"--show must be 0 or more, got {show}")
        changes = ca_urls_plan(
            ca=ca,
            pki_url=pki_url,
            crl_base_url=crl_base_url,
            ocsp_url=ocsp_url,
            ca_issuers_base_url=ca_issuers_base_url,
            sample=show,
        )
        for change in changes:
            self._report(change)
        changed = [change for change in changes if change.changed]
        self._warn(changed)
        if not changed:
            self.stdout.write("Nothing to change.")
            return
        if dry_run:
            self.stdout.write(f"Dry run: {len(changed)} CA(s) would change; nothing was changed.")
            return
        ca_urls_apply(changed, actor=command_actor("set_ca_urls"))
        self.stdout.write(
            f"Changed the URLs of {', '.join(c.ca.slug for c in changed)} (audited as "
            "ca.urls_changed): certificates signed from now on carry them."
        )

    def _report(self, change: CaUrlsChange) -> None:
        slug = change.ca.slug
        if not change.changed:
            self.stdout.write(f"{slug}: unchanged")
            return
        self.stdout.write(f"{slug}:")
        for label, field in LABELS:
            old, new = getattr(change.before, field), getattr(change.after, field)
            if old != new:
                self.stdout.write(f"  {label}: {old or '(none)'} -> {new or '(none)'}")
        if not change.stale_count:
            self.stdout.write("  no live certificate of this CA carries other URLs")
            return
        self.stdout.write(
            f"  {change.stale_count} live certificate(s) of this CA carry other URLs and keep "
            "them until renewed:"
        )
        for stale in change.stale:
            self.stdout.write(
                f"    {stale.serial} {stale.subject} until {stale.not_after:%Y-%m-%d %H:%M}Z: "
                + ", ".join(stale.urls)
            )
        if change.stale_count > len(change.stale):
            self.stdout.write(f"    … and {change.stale_count - len(change.stale)} more")

    def _warn(self, changed: list[CaUrlsChange]) -> None:
        """Allowed but worth a second look: https (as pki.W001 says of the settings), and hosts
        that Django here would refuse (the CRL and caIssuers views check the Host header; the
        OCSP path does not reach Django)."""
        urls = [url for change in changed for url in change.after.written()]
        if any(url.startswith("https://") for url in urls):
            self.stderr.write(
                "warning: https URLs: relying parties fetching CRLs and OCSP over TLS may need "
                "revocation data to validate that server first (RFC 5280 §4.2.1.13)"
            )
        served_by_django = {
            urlsplit(url).hostname or ""
            for change in changed
            for url in (change.after.crl_url, change.after.ca_issuers_url)
        }
        refused = sorted(
            h for h in served_by_django if not validate_host(h, settings.ALLOWED_HOSTS)
        )
        if refused:
            self.stderr.write(
                f"warning: {', '.join(refused)} not in DJANGO_ALLOWED_HOSTS here: the CRL and "
                "caIssuers views would answer 400 unless the serving processes allow it"
            )
