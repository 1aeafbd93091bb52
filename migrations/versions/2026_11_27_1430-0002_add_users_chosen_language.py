"""add users.chosen_language

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: adding it rewrites no rows (PostgreSQL only records it in the
    # catalog), and the Pods still running the previous code never write it.
    op.add_column("users", sa.Column("chosen_language", sa.String(), nullable=True))


def downgrade() -> None:
    # Loses the users' language choices; they fall back to Telegram's language_code.
    op.drop_column("users", "chosen_language")
