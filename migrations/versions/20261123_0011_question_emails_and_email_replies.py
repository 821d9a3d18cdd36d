"""question emails and email replies

`question_emails`: a question's email (its Message-ID, the Google account whose Gmail
sees the reply, the historyId to read that Gmail's history from); `email_replies`: the
replies the reply poller handled, unique per Gmail message, so one answers at most once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('email_replies',
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('gmail_message_id', sa.String(length=200), nullable=False),
    sa.Column('question_id', sa.Uuid(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_email_replies_account_id_accounts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['question_id'], ['questions.id'], name=op.f('fk_email_replies_question_id_questions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_email_replies')),
    sa.UniqueConstraint('account_id', 'gmail_message_id', name=op.f('uq_email_replies_account_id_gmail_message_id'))
    )
    op.create_table('question_emails',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('question_id', sa.Uuid(), nullable=False),
    sa.Column('delivery_id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('history_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_question_emails_account_id_accounts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_question_emails_delivery_id_deliveries'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['question_id'], ['questions.id'], name=op.f('fk_question_emails_question_id_questions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_question_emails_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_question_emails')),
    sa.UniqueConstraint('message_id', name=op.f('uq_question_emails_message_id'))
    )
    with op.batch_alter_table('question_emails', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_question_emails_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_question_emails_question_id'), ['question_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('question_emails', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_question_emails_question_id'))
        batch_op.drop_index(batch_op.f('ix_question_emails_account_id'))

    op.drop_table('question_emails')
    op.drop_table('email_replies')
