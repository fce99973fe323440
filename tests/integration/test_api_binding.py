"""An API request's connection sees one tenant: bound per transaction by a ticket made with the
API secret (alembic 0006), which the handler role can neither read nor forge."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.store import db
from tests.fixtures import make_tenant, sql


def _insert_job(tenant: str) -> str:
    return sql("INSERT INTO job_executions (tenant_id, intent_key, status) "
               "VALUES (CAST(:t AS uuid), 'system.exec.echo', 'cancelled') RETURNING id::text",
               t=tenant)[0][0]


def test_a_tenant_bound_transaction_sees_and_changes_only_its_tenants_rows():
    mine, theirs = make_tenant(), make_tenant()
    my_job, their_job = _insert_job(mine), _insert_job(theirs)
    with db.tenant_begin(mine) as conn:
        seen = {r[0] for r in conn.execute(text("SELECT id::text FROM job_executions"))}
        changed = conn.execute(text(
            "UPDATE job_executions SET error_message = 'touched' WHERE id = CAST(:j AS uuid)"),
            {"j": their_job}).rowcount
        user = conn.execute(text("SELECT current_user")).scalar()
        tenants = {r[0] for r in conn.execute(text("SELECT id::text FROM tenants"))}
    assert my_job in seen and their_job not in seen
    assert changed == 0 and user == "jobq_handler" and tenants == {mine}
    assert sql("SELECT error_message FROM job_executions WHERE id = CAST(:j AS uuid)",
               j=their_job)[0][0] is None


def test_the_binding_ends_with_its_transaction_and_a_forged_ticket_is_refused():
    mine = make_tenant()
    _insert_job(mine)
    with db.handler_engine().connect() as conn:
        with conn.begin():
            db.bind_tenant(conn, mine)
            assert conn.execute(text("SELECT count(*) FROM job_executions")).scalar() == 1
        with conn.begin():  # a new transaction on the same connection: bound to nothing
            assert conn.execute(text("SELECT count(*) FROM job_executions")).scalar() == 0
        pid = conn.connection.dbapi_connection.info.backend_pid
        forged = hashlib.sha256(f"guess:{mine}:{pid}".encode()).hexdigest()
        with pytest.raises(DBAPIError, match="not bound by this ticket"), conn.begin():
            conn.execute(text("SELECT jobq_bind_tenant(CAST(:t AS uuid), :k)"),
                         {"t": mine, "k": forged})


def test_the_handler_role_cannot_read_the_api_secret_nor_the_keys():
    with db.handler_engine().connect() as conn:
        for table in ("jobq_api_secret", "api_keys"):
            with pytest.raises(DBAPIError, match="permission denied"), conn.begin():
                conn.execute(text(f"SELECT * FROM {table}"))
