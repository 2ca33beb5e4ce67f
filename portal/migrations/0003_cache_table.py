"""Create the database cache table when the cache is the database (no Redis): every process
shares the cached trust decisions, and a revocation must reach all of them. Idempotent, and
does nothing for other cache backends."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_audit_append_only")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
