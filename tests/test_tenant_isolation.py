"""Tenant isolation in the database: row-level security on every tenant-owned table, the
handler's session running as ``jobq_tenant`` bound to its job's tenant, and the engine's own
connections the only ones that see every tenant.
"""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from app import db, dispatch_intent
from tests.academy import make_student
from tests.fixtures import job_row, make_tenant, sql, wait_for_status
from tests.security_intents import ESCAPES

ROLE = db.TENANT_ROLE
POLICY = "tenant_isolation"

TENANT_OWNED = """
    SELECT c.relname
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
       AND c.relname NOT LIKE 'test\\_%'
"""


def rls_state(conn) -> dict[str, tuple[bool, list[str]]]:
    """Each table: whether row-level security is on, and the roles its isolation policy binds."""
    rows = conn.execute(text(
        """
        SELECT c.relname, c.relrowsecurity,
               coalesce((SELECT array_agg(r) FROM pg_policies p, unnest(p.roles) r
                          WHERE p.tablename = c.relname AND p.policyname = :policy), '{}')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind = 'r'
        """), {"policy": POLICY})
    return {name: (enabled, sorted(roles)) for name, enabled, roles in rows}


def test_every_tenant_owned_table_has_row_level_security_for_the_tenant_role():
    with db.engine().connect() as conn:
        owned = {r[0] for r in conn.execute(text(TENANT_OWNED))}
        state = rls_state(conn)
        role = conn.execute(text(
            "SELECT rolcanlogin, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"),
            {"r": ROLE}).one()
    # The domain's tables and the engine's own: a table added later must not slip through.
    assert {"students", "guardians", "invoices", "notifications", "job_executions",
            "job_schedules", "roster_import_errors"} <= owned
    for table in owned | {"tenants", "job_events"}:
        assert state[table] == (True, [ROLE]), f"{table}: {state[table]}"
    assert tuple(role) == (False, False, False)  # NOLOGIN, no superuser, no bypass


def test_a_handler_that_snoops_on_another_tenant_sees_nothing_and_changes_nothing(worker):
    mine, theirs = make_tenant("우리 학원"), make_tenant("남의 학원")
    own_student = make_student(mine, "우리 학생")
    victim = make_student(theirs, "남의 학생")
    their_job = dispatch_intent.delay(tenant_id=theirs, intent_key="system.exec.echo",
                                      intent_params={"private": "남의 일"}).get(timeout=15)
    wait_for_status(their_job, "completed")

    def their_rows() -> dict[str, list]:
        return {
            "students": sql("SELECT id, name, tenant_id FROM students WHERE tenant_id = :t "
                            "ORDER BY id", t=theirs),
            "jobs": sql("SELECT id, status FROM job_executions WHERE tenant_id = :t", t=theirs),
            "events": sql("SELECT count(*) FROM job_events WHERE job_id = :j", j=their_job),
            "tenants": sql("SELECT id, status FROM tenants WHERE id IN (:a, :b) ORDER BY id",
                           a=mine, b=theirs),
        }

    before = their_rows()

    job_id = dispatch_intent.delay(
        tenant_id=mine, intent_key="test.exec.snoop_other_tenant",
        intent_params={"other_tenant_id": theirs, "other_student_id": str(victim.id),
                       "other_job_id": their_job}).get(timeout=15)
    row = wait_for_status(job_id, "completed")

    seen, writes = row["result"]["seen"], row["result"]["writes"]
    assert seen == {
        "role": ROLE, "journal_role": ROLE,
        "other_students": 0, "other_student_by_id": 0, "journal_other_students": 0,
        "student_tenants": 1, "tenants": 1, "other_tenant": 0,
        "other_jobs": 0, "other_job_events": 0, "job_tenants": 1, "guardians_joined": 0,
    }
    violation = "new row violates row-level security policy"
    assert writes["update_other"] == "allowed (0 rows)"
    assert writes["delete_other"] == "allowed (0 rows)"
    assert writes["fail_other_job"] == "allowed (0 rows)"
    assert writes["insert_other"].startswith(violation), writes["insert_other"]
    assert writes["move_own_to_other"].startswith(violation), writes["move_own_to_other"]
    assert writes["event_on_other_job"].startswith(violation), writes["event_on_other_job"]
    assert writes["delete_own_job"] == "permission denied for table job_executions"
    assert writes["suspend_own_tenant"] == "permission denied for table tenants"
    assert writes["submit_for_other"] == f"unknown tenant {theirs}"

    assert their_rows() == before
    # Its own work committed with its completion, under the same policies.
    assert sql("SELECT name FROM students WHERE tenant_id = :t ORDER BY name", t=mine) == [
        ("우리 학생",), ("정상 학생",)]
    assert own_student.tenant_id == uuid.UUID(mine)


def test_a_tenant_session_sees_only_its_tenant_and_the_engine_sees_all():
    a, b = make_tenant(), make_tenant()
    make_student(a, "가 학생")
    make_student(b, "나 학생")

    with db.tenant_session(a) as session:
        names = [r[0] for r in session.execute(text(
            "SELECT name FROM students WHERE tenant_id IN (:a, :b)"), {"a": a, "b": b})]
        session.commit()
        # The binding ends with the transaction and is made again as the next one begins.
        again = session.execute(text("SELECT current_user, current_setting('app.tenant_id')"))
        assert tuple(again.one()) == (ROLE, a)
    assert names == ["가 학생"]

    # The engine's own connections (dispatch, sweep, recovery, status writes) see both.
    with db.engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM students WHERE tenant_id IN (:a, :b)"),
                            {"a": a, "b": b}).scalar() == 2
        # ...and a pooled connection a tenant used is the owner again afterwards.
        assert conn.execute(text("SELECT current_user = :r"), {"r": ROLE}).scalar() is False
    with db.status_conn() as conn:
        assert conn.execute(text("SELECT count(*) FROM tenants WHERE id IN (:a, :b)"),
                            {"a": a, "b": b}).scalar() == 2


def test_the_tenant_role_without_a_tenant_sees_nothing():
    tenant = make_tenant()
    make_student(tenant)
    with db.engine().begin() as conn:
        conn.execute(text(f"SET LOCAL ROLE {ROLE}"))
        assert conn.execute(text("SELECT count(*) FROM students")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM tenants")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM job_executions")).scalar() == 0
    with db.engine().begin() as conn:  # '' is what an ended SET LOCAL leaves behind
        conn.execute(text(f"SET LOCAL ROLE {ROLE}"))
        conn.execute(text("SET LOCAL app.tenant_id = ''"))
        assert conn.execute(text("SELECT count(*) FROM students")).scalar() == 0


def test_the_tenant_role_cannot_touch_the_engines_own_tables():
    with db.engine().begin() as conn:
        db.bind_tenant(conn, make_tenant())
        for statement in ("SELECT count(*) FROM job_schedule_runs",
                          "SELECT count(*) FROM alembic_version"):
            with pytest.raises(Exception, match="permission denied"), conn.begin_nested():
                conn.execute(text(statement))


# --- the migration ------------------------------------------------------------------------------


def test_the_migration_covers_a_table_added_to_the_domain_later_and_goes_down_cleanly(
        scratch_database):
    cfg = db.alembic_config(scratch_database)
    cfg.attributes["configure_logger"] = False
    engine = create_engine(db.sqlalchemy_url(scratch_database))
    try:
        command.upgrade(cfg, "0002")
        with engine.begin() as conn:  # as if a later edit of 0002 had added it
            conn.execute(text("CREATE TABLE lesson_notes (id serial PRIMARY KEY, "
                              "tenant_id uuid NOT NULL REFERENCES tenants(id), body text)"))
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            assert rls_state(conn)["lesson_notes"] == (True, [ROLE])
            granted = conn.execute(text(
                "SELECT has_table_privilege(:r, 'lesson_notes', 'INSERT'), "
                "has_sequence_privilege(:r, 'lesson_notes_id_seq', 'USAGE')"), {"r": ROLE}).one()
            assert tuple(granted) == (True, True)

        command.downgrade(cfg, "0002")
        with engine.connect() as conn:
            state = rls_state(conn)
            assert not any(enabled or roles for enabled, roles in state.values()), state
            assert conn.execute(text(
                "SELECT count(*) FROM information_schema.role_table_grants "
                "WHERE grantee = :r AND table_catalog = current_database()"),
                {"r": ROLE}).scalar() == 0
        command.upgrade(cfg, "head")  # and up again, the role already there
        with engine.connect() as conn:
            assert rls_state(conn)["students"] == (True, [ROLE])
    finally:
        engine.dispose()


def test_an_insert_of_the_original_shape_still_works_for_the_engine(tenant):
    """The seed's callers insert as the tables' owner: row-level security does not bind them."""
    job_id = sql("INSERT INTO job_executions (tenant_id, intent_key) "
                 "VALUES (:t, 'system.exec.echo') RETURNING id::text", t=tenant)[0][0]
    assert job_row(job_id)["status"] == "pending"


# --- escapes -------------------------------------------------------------------------------------


def test_a_handler_that_tries_every_escape_stays_in_its_tenant_and_changes_nothing_of_another(
        worker):
    """The handler (tests/security_intents.py: escape_tenant) tries each way out on its own
    session, then reads and writes the other tenant's rows and commits whatever got through;
    meanwhile the other tenant's handler holds a bound session of its own."""
    from tests.fixtures import wait_for

    mine, theirs = make_tenant("탈출 학원"), make_tenant("피해 학원")
    make_student(mine, "우리 학생")
    victim = make_student(theirs, "남의 학생")
    their_job = dispatch_intent.delay(tenant_id=theirs, intent_key="test.exec.hold_session",
                                      intent_params={"seconds": 20}).get(timeout=15)
    wait_for(lambda: (job_row(their_job) or {}).get("progress"), 15,
             message="the other tenant's handler to hold its bound session")

    def their_rows() -> dict[str, list]:
        return {
            "students": sql("SELECT id, name FROM students WHERE tenant_id = :t ORDER BY id",
                            t=theirs),
            "jobs": sql("SELECT id, status, error_message FROM job_executions "
                        "WHERE tenant_id = :t ORDER BY id", t=theirs),
            "events": sql("SELECT count(*) FROM job_events WHERE job_id = :j", j=their_job),
            "tenants": sql("SELECT id, name, status FROM tenants ORDER BY id"),
        }

    before = their_rows()
    job_id = dispatch_intent.delay(
        tenant_id=mine, intent_key="test.exec.escape_tenant",
        intent_params={"other_tenant_id": theirs, "other_student_id": str(victim.id),
                       "other_job_id": their_job}).get(timeout=15)
    report = wait_for_status(job_id, "completed", timeout=40)["result"]

    handler = "jobq_handler"
    owner = report["owner"]
    refused = {
        "set_session_authorization": "permission denied to set session authorization",
        "set_role_owner": f'permission denied to set role "{owner}"',
        "set_config_role": f'permission denied to set role "{owner}"',
        "bind_other_job": f"job {their_job} is not running under this binding",
    }
    for name in ESCAPES:
        attempt = report[name]
        expected = refused.get(name, "ok")
        if name == "replay_sniffed_bind":
            expected = refused["bind_other_job"] if report["sniffed"] else "ok"
        assert attempt["statement"].startswith(expected), (name, attempt["statement"])
        assert attempt["seen"] == {
            "user": handler, "job_tenants": 1, "tenants": 1, "other_students": 0,
            "other_job_events": 0,
            "schedules": "permission denied for table job_schedules",
            "alembic_version": "permission denied for table alembic_version",
            "rename_other_student": "0 rows", "forge_other_job": "0 rows",
            "plant_other_student":
                'new row violates row-level security policy for table "students"',
            "submit_for_other": f"unknown tenant {theirs}",
        }, (name, attempt["seen"])
    assert report["journal"] == {"user": handler, "other_students": 0, "job_tenants": 1}
    assert their_rows() == before

