"""Indexes that let prefix `like` filters (`name like 'abc%'`) use an index on PostgreSQL.

An ordinary btree index cannot serve LIKE under a non-C collation; `varchar_pattern_ops`
can. SQLite has no operator classes, so this does nothing there.
"""

from django.db import migrations

INDEXES = [
    ("links_class_name_pattern", "links", "link_class, name varchar_pattern_ops"),
    ("links_name_pattern", "links", "name varchar_pattern_ops"),
    ("collections_name_pattern", "collections", "name varchar_pattern_ops"),
    ("groups_name_pattern", "groups", "name varchar_pattern_ops"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, table, columns in INDEXES:
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _, _ in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
