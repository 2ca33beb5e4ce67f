"""Error codes became upper snake case (``csr_key_reused`` → ``CSR_KEY_REUSED``): requests
refused before the change keep their refusal under the code the API now answers with."""

from django.db import migrations
from django.db.models.functions import Upper


def upper_codes(apps, schema_editor):
    CertificateRequest = apps.get_model("pki", "CertificateRequest")
    CertificateRequest.objects.exclude(rejection_code="").update(
        rejection_code=Upper("rejection_code")
    )


class Migration(migrations.Migration):
    dependencies = [("pki", "0006_alter_certificate_participant_and_more")]

    operations = [migrations.RunPython(upper_codes, migrations.RunPython.noop)]
