"""the enum columns refuse unknown values: study and event state and stage, result kind, export state

PostgreSQL gets CHECK constraints (validated against the rows already there). SQLite
cannot add a CHECK constraint without rebuilding the table, and a rebuild drops
``studies`` under ``ON DELETE CASCADE`` foreign keys; it gets BEFORE INSERT / BEFORE
UPDATE triggers with the same condition instead, which touch no row. The values are
frozen here as they are today (``spinenode.core.enums``): a later change of an enum comes
with a migration of its own.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STUDY_STATES = ("RECEIVING", "COMPLETE", "QUEUED", "ANALYZING", "ENCODING", "EXPORTING", "DONE", "SKIPPED",
                "FAILED")
STAGES = ("analyze", "encode", "export")
RESULT_KINDS = ("sr", "not-analysed-sr", "seg", "key-images")
EXPORT_STATES = ("PENDING", "SENDING", "SENT", "FALLBACK", "FAILED")

#: table -> [(column, allowed values)]
GUARDED: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "studies": [("state", STUDY_STATES), ("failed_stage", STAGES)],
    "events": [("state", STUDY_STATES), ("stage", STAGES)],
    "results": [("kind", RESULT_KINDS)],
    "exports": [("state", EXPORT_STATES)],
}


def _in(column: str, values: tuple[str, ...], prefix: str = "") -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{prefix}{column} IN ({listed})"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table, columns in GUARDED.items():
            # NULL NOT IN (...) is NULL, not true: a NULL stage passes, as with CHECK.
            bad = " OR ".join(f"NOT ({_in(c, v, 'NEW.')})" for c, v in columns)
            names = ", ".join(c for c, _ in columns)
            message = f"{table}: {names} must be one of the known values"
            op.execute(
                f"CREATE TRIGGER ck_{table}_insert BEFORE INSERT ON {table} WHEN {bad} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
            op.execute(
                f"CREATE TRIGGER ck_{table}_update BEFORE UPDATE OF {names} ON {table} WHEN {bad} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        return
    for table, columns in GUARDED.items():
        for column, values in columns:
            op.create_check_constraint(f"ck_{table}_{column}", table, _in(column, values))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in GUARDED:
            op.execute(f"DROP TRIGGER IF EXISTS ck_{table}_insert")
            op.execute(f"DROP TRIGGER IF EXISTS ck_{table}_update")
        return
    for table, columns in GUARDED.items():
        for column, _ in columns:
            op.drop_constraint(f"ck_{table}_{column}", table, type_="check")
