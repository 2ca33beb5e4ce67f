from typing import Any

from django.core.management.base import CommandParser

from pki.crypto import KEY_TYPES
from pki.keystore import ca_dir
from pki.management.commands._base import KeylineCommand
from pki.models import CertificateAuthority
from pki.revocation import crl_publish
from pki.services import ca_init, command_actor


class Command(KeylineCommand):
    help = (
        "Create the root CA, the client issuing CA, the server CA and the OCSP responder "
        "delegate. Keys go to the CA directory, encrypted with the CA passphrase. Each CA "
        "records the CRL, OCSP and caIssuers URLs of the settings (KEYLINE_PKI_URL) as its own."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
        parser.add_argument(
            "--force",
            action="store_true",
            help="replace an existing CA (the old one is kept inactive)",
        )
        parser.add_argument(
            "--if-missing", action="store_true", help="do nothing (exit 0) when a CA exists"
        )

    def handle(
        self, *args: Any, key_type: str, force: bool, if_missing: bool, **options: Any
    ) -> None:
        if (
            if_missing
            and not force
            and CertificateAuthority.objects.filter(is_active=True).exists()
        ):
            self.stdout.write("CA already initialised; nothing to do.")
            return
        actor = command_actor("init_ca")
        cas = ca_init(key_type=key_type, force=force, actor=actor)
        crls = crl_publish(actor=actor)  # nginx needs a CRL for every CA from the start
        for ca in (cas.root, cas.client, cas.server):
            self.stdout.write(f"{ca.name}: serial {ca.serial}, sha256 {ca.fingerprint_sha256}")
            urls = [ca.crl_url, ca.ocsp_url, ca.ca_issuers_url]
            self.stdout.write(f"  writes {', '.join(u for u in urls if u)}")
        self.stdout.write("These URLs are the CAs' now; change them with set_ca_urls.")
        self.stdout.write(f"Published CRLs: {', '.join(f'{r.ca.slug} #{r.number}' for r in crls)}")
        self.stdout.write(
            f"Certificates in {ca_dir() / 'certs'}; keys (0600) in {ca_dir() / 'keys'}"
        )
