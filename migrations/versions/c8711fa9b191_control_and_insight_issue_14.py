"""control and insight (issue 14): attribution, spend limits, alerts, outbox

Ledger entries name the API key that caused them (existing rows keep their actor type and user;
an old API entry simply names no key). API keys and members get optional spend limits, members an
alert-email opt-out (on for everyone), a limit's running counter per period (built from the
ledger when first needed, so existing usage counts), balances their low-balance thresholds (NULL: the configured
default, as before). All mail now leaves through ``outbox_messages``.

Revision ID: c8711fa9b191
Revises: 7e265ff4baf8
Create Date: 2026-12-02 13:36:55.361341

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c8711fa9b191'
down_revision = '7e265ff4baf8'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('outbox_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('to', sa.String(length=255), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('html', sa.Text(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name=op.f('ck_outbox_messages_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_outbox_messages_dedupe_key'))
    )
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_messages_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('spend_limit_usage',
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('subject_id', sa.BigInteger(), nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_spend_limit_usage_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('team_id', 'scope', 'subject_id', 'period', 'period_start', name=op.f('pk_spend_limit_usage'))
    )

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spend_limit', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('limit_period', sa.String(length=8), server_default='month', nullable=False))
        batch_op.create_check_constraint(op.f('ck_api_keys_limit_period'), "limit_period IN ('month', 'day')")
        batch_op.create_check_constraint(op.f('ck_api_keys_spend_limit_positive'), 'spend_limit IS NULL OR spend_limit > 0')

    with op.batch_alter_table('credit_balances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('alert_levels', sa.JSON(), nullable=True))

    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('api_key_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_ledger_entries_api_key_usage', ['api_key_id', 'created_at'], unique=False)
        batch_op.create_index('ix_ledger_entries_team_actor_usage', ['team_id', 'actor_user_id', 'created_at'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_ledger_entries_api_key_id_api_keys'), 'api_keys', ['api_key_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.add_column(sa.Column('monthly_limit', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('alert_emails', sa.Boolean(), server_default='1', nullable=False))



def downgrade():
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_column('alert_emails')
        batch_op.drop_column('monthly_limit')

    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_ledger_entries_api_key_id_api_keys'), type_='foreignkey')
        batch_op.drop_index('ix_ledger_entries_team_actor_usage')
        batch_op.drop_index('ix_ledger_entries_api_key_usage')
        batch_op.drop_column('api_key_id')

    with op.batch_alter_table('credit_balances', schema=None) as batch_op:
        batch_op.drop_column('alert_levels')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_api_keys_spend_limit_positive'), type_='check')
        batch_op.drop_constraint(op.f('ck_api_keys_limit_period'), type_='check')
        batch_op.drop_column('limit_period')
        batch_op.drop_column('spend_limit')

    op.drop_table('spend_limit_usage')

    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_messages_due')

    op.drop_table('outbox_messages')
