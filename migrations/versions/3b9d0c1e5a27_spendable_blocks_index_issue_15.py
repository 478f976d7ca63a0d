"""spendable blocks index (issue 15)

A partial index in the spending order over the blocks a spend can draw from, so a spend reads the
first few rows of it (with a LIMIT) instead of sorting every block of the team.

Revision ID: 3b9d0c1e5a27
Revises: f183961e4e61
Create Date: 2026-12-02 14:50:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '3b9d0c1e5a27'
down_revision = 'f183961e4e61'
branch_labels = None
depends_on = None

PREDICATE = "expired_at IS NULL AND remaining > held"


def upgrade():
    with op.batch_alter_table('credit_blocks', schema=None) as batch_op:
        batch_op.create_index(
            'ix_credit_blocks_spendable',
            ['team_id', 'expires_at', 'created_at', 'id'],
            unique=False,
            postgresql_where=sa.text(PREDICATE),
            sqlite_where=sa.text(PREDICATE),
        )


def downgrade():
    with op.batch_alter_table('credit_blocks', schema=None) as batch_op:
        batch_op.drop_index('ix_credit_blocks_spendable')
