"""Make the audit log append-only in the database itself: UPDATE and DELETE on
portal_auditrecord raise. The hash chain still catches what someone does after dropping these
triggers (manage.py verify_audit).

TRUNCATE is left to the table owner (Django's test flush uses it); a truncated log no longer
matches the chain head in portal_audithead, which verify_audit reports."""

from django.db import migrations

SQLITE = [
    """CREATE TRIGGER portal_auditrecord_no_update BEFORE UPDATE ON portal_auditrecord
       BEGIN SELECT RAISE(ABORT, 'portal_auditrecord is append-only'); END""",
    """CREATE TRIGGER portal_auditrecord_no_delete BEFORE DELETE ON portal_auditrecord
       BEGIN SELECT RAISE(ABORT, 'portal_auditrecord is append-only'); END""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS portal_auditrecord_no_update",
    "DROP TRIGGER IF EXISTS portal_auditrecord_no_delete",
]
POSTGRES = [
    """CREATE OR REPLACE FUNCTION portal_auditrecord_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'portal_auditrecord is append-only'; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER portal_auditrecord_append_only
       BEFORE UPDATE OR DELETE ON portal_auditrecord
       FOR EACH ROW EXECUTE FUNCTION portal_auditrecord_append_only()""",
]
POSTGRES_REVERSE = [
    "DROP TRIGGER IF EXISTS portal_auditrecord_append_only ON portal_auditrecord",
    "DROP FUNCTION IF EXISTS portal_auditrecord_append_only()",
]


def _run(statements_by_vendor):  # noqa: ANN001, ANN202
    def run(apps, schema_editor):  # noqa: ANN001, ANN202
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


def create_head(apps, schema_editor):  # noqa: ANN001, ANN201
    apps.get_model("portal", "AuditHead").objects.get_or_create(
        pk=1, defaults={"sequence": 0, "hash": "0" * 64}
    )


class Migration(migrations.Migration):
    dependencies = [("portal", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRES}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRES_REVERSE}),
        ),
        migrations.RunPython(create_head, migrations.RunPython.noop),
    ]
