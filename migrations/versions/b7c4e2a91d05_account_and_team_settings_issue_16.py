"""account and team settings (issue 16)

``users.pending_email`` and ``users.pending_email_nonce``: an email change waits for its confirmation
link; ``teams.deleted_at``: a team its owner deleted is archived, its ledger kept.

Revision ID: b7c4e2a91d05
Revises: 9a1f3c7d2b60
Create Date: 2026-12-02 16:55:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7c4e2a91d05'
down_revision = '9a1f3c7d2b60'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pending_email', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('pending_email_nonce', sa.String(length=32), nullable=True))
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.drop_column('deleted_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('pending_email_nonce')
        batch_op.drop_column('pending_email')
