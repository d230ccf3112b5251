"""a worker's heartbeat names every study it is working on (an analysis batch), not only the first

``workers.current_studies``: the study UIDs, separated by spaces (a UID holds digits and
dots only). ``current_study`` stays the first of them, for the API and dashboards that
read it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("current_studies", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("current_studies")
