"""node power settings and power actions

Revision ID: 5b1e0c24a9d3
Revises: dd8972574235
Create Date: 2026-12-06 22:10:00.000000

"""
from alembic import op
import sqlalchemy as sa

import provisioner.coltypes


# revision identifiers, used by Alembic.
revision = '5b1e0c24a9d3'
down_revision = 'dd8972574235'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('node_power',
    sa.Column('node_id', sa.String(length=36), nullable=False),
    sa.Column('driver', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=512), nullable=False),
    sa.Column('username', sa.String(length=255), nullable=True),
    sa.Column('password_encrypted', sa.Text(), nullable=True),
    sa.Column('power_state', sa.String(length=16), nullable=True),
    sa.Column('power_state_at', provisioner.coltypes.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', provisioner.coltypes.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('node_id')
    )
    op.create_table('power_actions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.String(length=36), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('requested_by', sa.String(length=20), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', provisioner.coltypes.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', provisioner.coltypes.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('power_actions', schema=None) as batch_op:
        batch_op.create_index('ix_power_actions_node_id_id', ['node_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_power_actions_status'), ['status'], unique=False)


def downgrade():
    with op.batch_alter_table('power_actions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_power_actions_status'))
        batch_op.drop_index('ix_power_actions_node_id_id')
    op.drop_table('power_actions')
    op.drop_table('node_power')
