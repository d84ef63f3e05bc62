"""``alembic upgrade head`` against a sqlite+gateway URL, in a tiny migration env."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("alembic")

from sqlalchemy import create_engine, inspect, text  # noqa: E402

from sqlite_gateway.integrations import registry  # noqa: E402

ENV_PY = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
connectable = engine_from_config(config.get_section(config.config_ini_section),
                                 prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
'''

FIRST = '''
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

def upgrade():
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(50), nullable=False))
    op.execute("INSERT INTO account (name) VALUES ('ada')")

def downgrade():
    op.drop_table("account")
'''

SECOND = '''
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

def upgrade():
    with op.batch_alter_table("account") as batch:  # SQLite's move-and-copy
        batch.add_column(sa.Column("email", sa.String(100), server_default="none"))
        batch.alter_column("name", new_column_name="full_name")
    op.create_index("ix_account_email", "account", ["email"])

def downgrade():
    op.drop_index("ix_account_email", "account")
    with op.batch_alter_table("account") as batch:
        batch.alter_column("full_name", new_column_name="name")
        batch.drop_column("email")
'''


def alembic(workdir, *args):
    out = subprocess.run([sys.executable, "-m", "alembic", "-c", "alembic.ini", *args],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_alembic_upgrade_and_downgrade_run_against_the_url(tmp_path):
    url = f"sqlite+gateway:///{tmp_path / 'app.db'}"
    (tmp_path / "alembic.ini").write_text(textwrap.dedent(f"""\
        [alembic]
        script_location = migrations
        sqlalchemy.url = {url}
        """))
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY)
    (tmp_path / "migrations" / "script.py.mako").write_text("")
    (versions / "0001_account.py").write_text(FIRST)
    (versions / "0002_email.py").write_text(SECOND)
    alembic(tmp_path, "upgrade", "head")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
            assert conn.execute(text("SELECT full_name, email FROM account")).all() == [
                ("ada", "none")]
            assert [i["name"] for i in inspect(conn).get_indexes("account")] == [
                "ix_account_email"]
        alembic(tmp_path, "downgrade", "0001")
        with engine.connect() as conn:
            assert [c["name"] for c in inspect(conn).get_columns("account")] == ["id", "name"]
            assert conn.execute(text("SELECT name FROM account")).scalar() == "ada"
    finally:
        engine.dispose()
        registry.close_all()
