"""The audit chain leaves the request path: a record is inserted without its place in the chain
(``sequence``, ``prev_hash``, ``hash`` and ``chained_at`` are null) and the chainer fills them
in later.

The append-only triggers are replaced by ones that allow exactly that: one UPDATE of a record
whose hash is null, setting the chain fields and nothing else. Any other UPDATE, and every
DELETE, still raises. Existing records are all chained and stay as they are."""

from django.db import migrations, models

CONTENT = (
    "id",
    "created_at",
    "event",
    "actor_type",
    "actor_id",
    "actor_label",
    "target_type",
    "target_id",
    "details",
)

POSTGRES = [
    "DROP TRIGGER IF EXISTS portal_auditrecord_append_only ON portal_auditrecord",
    f"""CREATE OR REPLACE FUNCTION portal_auditrecord_append_only() RETURNS trigger AS $$
       BEGIN
         IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND OLD.sequence IS NULL
            AND NEW.hash IS NOT NULL AND NEW.sequence IS NOT NULL AND NEW.prev_hash IS NOT NULL
            AND NEW.chained_at IS NOT NULL
            AND ({", ".join(f"NEW.{c}" for c in CONTENT)})
                IS NOT DISTINCT FROM ({", ".join(f"OLD.{c}" for c in CONTENT)})
         THEN
           RETURN NEW;  -- the chainer's one write of the chain fields
         END IF;
         RAISE EXCEPTION 'portal_auditrecord is append-only';
       END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER portal_auditrecord_append_only
       BEFORE UPDATE OR DELETE ON portal_auditrecord
       FOR EACH ROW EXECUTE FUNCTION portal_auditrecord_append_only()""",
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS portal_auditrecord_append_only ON portal_auditrecord",
]
_SAME = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in CONTENT)
SQLITE = [
    f"""CREATE TRIGGER portal_auditrecord_no_update BEFORE UPDATE ON portal_auditrecord
       WHEN NOT (OLD.hash IS NULL AND OLD.sequence IS NULL AND NEW.hash IS NOT NULL
                 AND NEW.sequence IS NOT NULL AND NEW.prev_hash IS NOT NULL
                 AND NEW.chained_at IS NOT NULL AND {_SAME})
       BEGIN SELECT RAISE(ABORT, 'portal_auditrecord is append-only'); END""",
    """CREATE TRIGGER portal_auditrecord_no_delete BEFORE DELETE ON portal_auditrecord
       BEGIN SELECT RAISE(ABORT, 'portal_auditrecord is append-only'); END""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS portal_auditrecord_no_update",
    "DROP TRIGGER IF EXISTS portal_auditrecord_no_delete",
]


def _run(statements_by_vendor):  # noqa: ANN001, ANN202
    def run(apps, schema_editor):  # noqa: ANN001, ANN202
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("kernel", "0001_initial"), ("portal", "0002_audit_append_only")]

    operations = [
        # The old triggers go first: SQLite rebuilds the table for the field changes.
        migrations.RunPython(
            _run({"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}), migrations.RunPython.noop
        ),
        migrations.AlterModelOptions(name="auditrecord", options={"ordering": ["id"]}),
        migrations.AlterField(
            model_name="auditrecord",
            name="hash",
            field=models.CharField(blank=True, max_length=64, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name="auditrecord",
            name="prev_hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="auditrecord",
            name="sequence",
            field=models.PositiveBigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="auditrecord",
            name="chained_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="auditrecord",
            index=models.Index(
                condition=models.Q(("hash__isnull", True)),
                fields=["id"],
                name="audit_unchained_idx",
            ),
        ),
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRES}), migrations.RunPython.noop
        ),
    ]
