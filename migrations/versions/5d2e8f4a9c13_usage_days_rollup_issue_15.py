"""usage per day rollup (issue 15)

``usage_days``: credits used (spends and captures) per team, UTC day and feature, kept by the ledger in
each spend's transaction; backfilled here from the entries already written.

Revision ID: 5d2e8f4a9c13
Revises: 3b9d0c1e5a27
Create Date: 2026-12-02 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '5d2e8f4a9c13'
down_revision = '3b9d0c1e5a27'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('usage_days',
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('feature', sa.String(length=64), nullable=False),
    sa.Column('credits', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_usage_days_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('team_id', 'day', 'feature', name=op.f('pk_usage_days'))
    )
    if op.get_bind().dialect.name == "postgresql":
        day = "(created_at AT TIME ZONE 'UTC')::date"
    else:
        day = "date(created_at)"
    op.execute(
        "INSERT INTO usage_days (team_id, day, feature, credits)"
        f" SELECT team_id, {day}, COALESCE(feature, ''), SUM(-amount) FROM ledger_entries"
        " WHERE kind IN ('spend', 'capture')"
        f" GROUP BY team_id, {day}, COALESCE(feature, '')"
    )


def downgrade():
    op.drop_table('usage_days')
