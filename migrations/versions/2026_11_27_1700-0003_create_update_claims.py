"""create update_claims, the exactly-once ledger

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new, empty table: Pods still running the previous code never touch it.
    op.create_table(
        "update_claims",
        sa.Column("bot_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bot_id", "update_id", name=op.f("pk_update_claims")),
    )
    op.create_index(
        op.f("ix_update_claims_expires_at"), "update_claims", ["expires_at"], unique=False
    )


def downgrade() -> None:
    # Loses only claims: redeliveries within the next 24 h may then be processed again.
    op.drop_index(op.f("ix_update_claims_expires_at"), table_name="update_claims")
    op.drop_table("update_claims")
