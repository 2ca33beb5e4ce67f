"""Distribution URLs move from the settings onto each CA row.

Existing rows get what certificates were signed with until now: the current settings
(``KEYLINE_CRL_BASE_URL``, ``KEYLINE_OCSP_URL``, ``KEYLINE_CA_ISSUERS_BASE_URL``), with the
OCSP URL only on client CAs, the one kind the responder answers for. Inactive CAs are filled
too, so every row says where its certificates point. The settings are read directly (not via
``pki.conf``) so that this migration keeps meaning what it means when that module changes.
"""

from django.conf import settings
from django.db import migrations, models


def fill_from_settings(apps, schema_editor):
    CertificateAuthority = apps.get_model("pki", "CertificateAuthority")
    crl_base = settings.KEYLINE_CRL_BASE_URL.rstrip("/")
    ca_issuers_base = settings.KEYLINE_CA_ISSUERS_BASE_URL.rstrip("/")
    for ca in CertificateAuthority.objects.using(schema_editor.connection.alias).all():
        ca.crl_url = f"{crl_base}/{ca.slug}.crl"
        ca.ca_issuers_url = f"{ca_issuers_base}/{ca.slug}.crt"
        ca.ocsp_url = settings.KEYLINE_OCSP_URL if ca.kind == "client" else ""
        ca.save(update_fields=["crl_url", "ca_issuers_url", "ocsp_url"])


class Migration(migrations.Migration):

    dependencies = [
        ("pki", "0004_crl_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="certificateauthority",
            name="crl_url",
            field=models.URLField(
                default="",
                help_text="Where this CA's CRL is published: the CRL distribution point of every certificate it issues.",
                max_length=400,
                verbose_name="CRL URL",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="certificateauthority",
            name="ocsp_url",
            field=models.URLField(
                blank=True,
                default="",
                help_text="The OCSP responder for the certificates this CA issues (AIA OCSP of its trader certificates); blank when no responder answers for them.",
                max_length=400,
                verbose_name="OCSP URL",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="certificateauthority",
            name="ca_issuers_url",
            field=models.URLField(
                default="",
                help_text="Where this CA's own certificate is published (DER): the AIA caIssuers of every certificate it issues.",
                max_length=400,
                verbose_name="caIssuers URL",
            ),
            preserve_default=False,
        ),
        migrations.RunPython(fill_from_settings, migrations.RunPython.noop),
    ]
