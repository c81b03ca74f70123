"""Fill leases across hosts sharing one catalog (issue 17; withcache.leases).

Revision ID: 009_leases
Revises: 008_baseline

A job row carries its lease: lease_owner (the holding host's --host-id), lease_token (one
claim), lease_url (the holder's --advertise-url), lease_until (expiry, seconds since the epoch;
NULL: free). A unique index on the key of active jobs makes a claim safe between hosts; a
catalog from before could hold two active jobs of one key (a host resumed duplicates), so all
but the newest of them are cancelled first.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "009_leases"
down_revision = "008_baseline"
branch_labels = None
depends_on = None

ACTIVE = "state IN ('queued', 'running')"
COLUMNS = (
    ("lease_owner", sa.Text()),
    ("lease_token", sa.Text()),
    ("lease_url", sa.Text()),
    ("lease_until", sa.Float()),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("jobs", sa.Column(name, type_))
    op.execute(
        "UPDATE jobs SET state = 'cancelled', error = 'duplicate of a newer job of this key',"
        f" finished_at = created_at WHERE {ACTIVE} AND id NOT IN"
        f" (SELECT MAX(id) FROM jobs WHERE {ACTIVE} GROUP BY key)"
    )
    op.create_index(
        "jobs_one_active_per_key",
        "jobs",
        ["key"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("jobs_one_active_per_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name, _type in reversed(COLUMNS):
            batch.drop_column(name)
