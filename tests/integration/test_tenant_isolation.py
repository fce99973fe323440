"""Tenant isolation in the database: handlers log in as a role of their own (``jobq_handler``)
that row-level security, forced on every tenant table, binds to the tenant of the job they run;
the binding is the engine's to make and ends with each transaction. Only the engine's own
connections see every tenant.
"""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from app import dispatch_intent
from app.store import db
from tests.academy import make_student
from tests.fixtures import job_row, make_tenant, sql, wait_for_status
from tests.security_intents import ESCAPES

# Migrations grant to the cluster's roles: two at the same moment fail ("tuple concurrently
# updated"). The files that migrate scratch databases run in one process, one after the other,
# and each of their tests holds the lock every test run's migrations take.
pytestmark = [pytest.mark.xdist_group("migrations"), pytest.mark.usefixtures("migrations_alone")]

ROLE = db.HANDLER_ROLE
POLICY = "tenant_isolation"
ENGINE_POLICY = "jobq_engine"
#: Tenant tables only the engine uses (api_keys: alembic 0006, read before a request is bound;
#: the fair-scheduling tables of 0005: handlers reach them only through SECURITY DEFINER
#: functions; an academy's channel limits, 0013: read by the send quota on the engine's own
#: connection, never by a handler's role).
ENGINE_ONLY = {"job_schedules", "tenant_events", "api_keys", "tenant_queue_limits", "fair_queue",
               "tenant_channel_limits", "job_stats_hourly"}

TENANT_OWNED = """
    SELECT c.relname
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
       AND c.relname NOT LIKE 'test\\_%'
"""


def rls_state(conn) -> dict[str, tuple[bool, bool, dict[str, list[str]]]]:
    """Each table: row-level security on, forced, and the roles of each of its policies."""
    rows = conn.execute(text(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               coalesce((SELECT jsonb_object_agg(p.policyname, p.roles) FROM pg_policies p
                          WHERE p.tablename = c.relname AND p.schemaname = n.nspname), '{}')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind = 'r'
        """))
    return {name: (enabled, forced, {k: sorted(v) for k, v in policies.items()})
            for name, enabled, forced, policies in rows}


def running_job(tenant: str, owner: str | None = None) -> tuple[str, str]:
    """A job of ``tenant`` that is processing under a lease owner: ``(job id, owner)``."""
    owner = owner or f"test:0:{uuid.uuid4().hex}"
    job = sql("INSERT INTO job_executions (tenant_id, intent_key, status, lease_owner, "
              "lease_expires_at) VALUES (:t, 'system.exec.echo', 'processing', :o, "
              "now() + interval '1 hour') RETURNING id::text", t=tenant, o=owner)[0][0]
    return job, owner


def test_every_tenant_table_forces_row_level_security_with_a_policy_per_role():
    with db.engine().connect() as conn:
        owned = {r[0] for r in conn.execute(text(TENANT_OWNED))}
        state = rls_state(conn)
        owner = conn.execute(text("SELECT tableowner FROM pg_tables "
                                  "WHERE tablename = 'job_executions'")).scalar()
        role = conn.execute(text(
            "SELECT rolcanlogin, rolsuper, rolbypassrls, pg_has_role(:r, :o, 'MEMBER'), "
            "(SELECT count(*) FROM pg_class WHERE relowner = pg_roles.oid) "
            "FROM pg_roles WHERE rolname = :r"), {"r": ROLE, "o": owner}).one()
    # The domain's tables and the engine's own: a table added later must not slip through.
    assert {"students", "guardians", "invoices", "notifications", "job_executions",
            "job_schedules", "roster_import_errors", "tenant_events"} <= owned
    for table in owned | {"tenants", "job_events"}:
        policies = {ENGINE_POLICY: [owner]} | ({} if table in ENGINE_ONLY else {POLICY: [ROLE]})
        assert state[table] == (True, True, policies), f"{table}: {state[table]}"
    # LOGIN, no superuser, no bypass, not a member of the owner, owns nothing.
    assert tuple(role) == (True, False, False, False, 0)


@pytest.mark.smoke
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


def test_a_handler_session_sees_only_its_jobs_tenant_and_the_engine_sees_all():
    a, b = make_tenant(), make_tenant()
    make_student(a, "가 학생")
    make_student(b, "나 학생")
    job, owner = running_job(a)

    with db.handler_session(job, owner) as session:
        names = [r[0] for r in session.execute(text(
            "SELECT name FROM students WHERE tenant_id IN (:a, :b)"), {"a": a, "b": b})]
        session.commit()
        # The binding ends with the transaction and is made again as the next one begins;
        # a savepoint is inside it.
        with session.begin_nested():
            again = session.execute(text("SELECT current_user, jobq_current_tenant()::text"))
            assert tuple(again.one()) == (ROLE, a)
    assert names == ["가 학생"]

    # The engine's own connections (dispatch, sweep, recovery, status writes) see both.
    with db.engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM students WHERE tenant_id IN (:a, :b)"),
                            {"a": a, "b": b}).scalar() == 2
    with db.status_conn() as conn:
        assert conn.execute(text("SELECT count(*) FROM tenants WHERE id IN (:a, :b)"),
                            {"a": a, "b": b}).scalar() == 2


def test_a_handler_connection_not_bound_by_the_engine_sees_nothing():
    tenant = make_tenant()
    make_student(tenant)
    job, owner = running_job(tenant)
    with db.handler_engine().begin() as conn:
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
        for table in ("students", "tenants", "job_executions", "job_events"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
    with db.handler_engine().begin() as conn:  # bound in an earlier transaction: over now
        db.bind_job(conn, job, owner)
    with db.handler_engine().begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM students")).scalar() == 0


def test_a_bind_ticket_is_good_only_for_its_running_job_and_its_own_connection():
    tenant = make_tenant()
    make_student(tenant)
    job, owner = running_job(tenant)
    refused = "is not running under this binding"
    with db.handler_engine().connect() as seen, db.handler_engine().connect() as other:
        pid = seen.connection.dbapi_connection.info.backend_pid
        ticket = db.bind_ticket(job, owner, pid)
        # The ticket another connection sent, replayed here (as if read from pg_stat_activity).
        with other.begin(), pytest.raises(Exception, match=refused):
            other.execute(text("SELECT jobq_bind(CAST(:j AS uuid), :t)"), {"j": job, "t": ticket})
        # Guessing the lease owner's token.
        with other.begin(), pytest.raises(Exception, match=refused):
            db.bind_job(other, job, owner.rsplit(":", 1)[0] + ":" + "0" * 32)
        with seen.begin():
            seen.execute(text("SELECT jobq_bind(CAST(:j AS uuid), :t)"), {"j": job, "t": ticket})
            assert seen.execute(text("SELECT count(*) FROM students")).scalar() == 1
    sql("UPDATE job_executions SET status = 'completed', lease_owner = NULL WHERE id = :j", j=job)
    with db.handler_engine().begin() as conn, pytest.raises(Exception, match=refused):
        db.bind_job(conn, job, owner)  # a finished job binds nothing any more


def test_the_handler_role_cannot_touch_the_engines_own_tables():
    job, owner = running_job(make_tenant())
    with db.handler_engine().begin() as conn:
        db.bind_job(conn, job, owner)
        for table in ("job_schedules", "job_schedule_runs", "tenant_events", "alembic_version",
                      "jobq_bindings"):
            with pytest.raises(Exception, match=f"permission denied for table {table}"), \
                    conn.begin_nested():
                conn.execute(text(f"SELECT count(*) FROM {table}"))
        with pytest.raises(Exception, match="permission denied for table jobq_bindings"), \
                conn.begin_nested():
            conn.execute(text("UPDATE jobq_bindings SET bound_tenant = gen_random_uuid()"))
        with pytest.raises(Exception, match="permission denied for schema"), \
                conn.begin_nested():
            conn.execute(text("CREATE TABLE students_copy (id int)"))


def test_a_pooled_handler_connection_keeps_nothing_of_its_last_user():
    """Another tenant's handler may get the connection next: no temporary table (which would
    shadow a real one), session setting or prepared statement of the last one survives."""
    from app.core.settings import settings

    # A pool of its own: the one connection it opens is the one it hands out again.
    pool = db._create(db.sqlalchemy_url(settings.require_handler_database_url()),
                      status=False, handler=True)
    with pool.connect() as conn:
        pid = conn.connection.dbapi_connection.info.backend_pid
        conn.execute(text("CREATE TEMP TABLE students (id int, name text) "
                          "ON COMMIT PRESERVE ROWS"))
        conn.execute(text("SELECT set_config('search_path', 'pg_temp, public', false), "
                          "set_config('TimeZone', 'America/Lima', false)"))
        conn.exec_driver_sql("PREPARE leftover AS SELECT 1")
        conn.commit()
    with pool.connect() as conn:
        assert conn.connection.dbapi_connection.info.backend_pid == pid  # the same connection
        leftovers = conn.execute(text(
            "SELECT (SELECT count(*) FROM pg_class WHERE relpersistence = 't'), "
            "current_setting('search_path'), current_setting('TimeZone'), "
            "(SELECT count(*) FROM pg_prepared_statements)")).one()
    pool.dispose()
    assert tuple(leftovers) == (0, '"$user", public', settings_timezone(), 0)


def settings_timezone() -> str:
    return sql("SELECT current_setting('TimeZone')")[0][0]


def test_what_one_handler_sends_is_not_shown_to_another():
    """Every handler session is the same role, and PostgreSQL shows a role the statements of
    its own sessions: the role does not report them (track_activities off)."""
    with db.handler_engine().connect() as sender, db.handler_engine().connect() as reader:
        pid = sender.connection.dbapi_connection.info.backend_pid
        sender.execute(text("SELECT '010-1234-5678 남의 학생' AS private"))
        shown = reader.execute(text("SELECT coalesce(query, '') FROM pg_stat_activity "
                                    "WHERE pid = :p"), {"p": pid}).scalar()
    assert "010-1234-5678" not in shown


def test_a_handler_url_that_logs_in_as_the_engine_is_refused():
    from tests.conftest import DATABASE_URL

    engine = db._create(db.sqlalchemy_url(DATABASE_URL), status=False, handler=True)
    try:
        with pytest.raises(db.HandlerRoleError, match="row-level security would not bind"):
            engine.connect()
    finally:
        engine.dispose()


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
            enabled, forced, policies = rls_state(conn)["lesson_notes"]
            assert (enabled, forced, policies[POLICY]) == (True, True, [ROLE])
            granted = conn.execute(text(
                "SELECT has_table_privilege(:r, 'lesson_notes', 'INSERT'), "
                "has_sequence_privilege(:r, 'lesson_notes_id_seq', 'USAGE')"), {"r": ROLE}).one()
            assert tuple(granted) == (True, True)

        command.downgrade(cfg, "0003")  # back to 0003's role and policies
        with engine.connect() as conn:
            state = rls_state(conn)
            assert state["lesson_notes"] == (True, False, {POLICY: ["jobq_tenant"]})
            assert "tenant_events" not in state and "jobq_bindings" not in state
        command.downgrade(cfg, "0002")
        with engine.connect() as conn:
            state = rls_state(conn)
            assert not any(enabled or policies for enabled, _, policies in state.values()), state
            assert conn.execute(text(
                "SELECT count(*) FROM information_schema.role_table_grants "
                "WHERE grantee IN (:r, 'jobq_tenant') AND table_catalog = current_database()"),
                {"r": ROLE}).scalar() == 0
        command.upgrade(cfg, "head")  # and up again, the roles already there
        with engine.connect() as conn:
            assert rls_state(conn)["students"][2][POLICY] == [ROLE]
    finally:
        engine.dispose()


def test_a_migrating_user_without_createrole_is_told_what_to_create_and_unfit_roles_are_refused():
    """Where `jobq migrate` runs as a plain database owner, it stops and names the role a
    database administrator must create; once created, it grants to it. A role that would see
    every tenant is never accepted."""
    import psycopg2
    from sqlalchemy.engine import make_url

    from tests.conftest import ADMIN_URL

    suffix = uuid.uuid4().hex[:8]
    owner, handler, database = f"jobq_owner_{suffix}", f"jobq_handler_{suffix}", f"jobq_dba_{suffix}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute(f"CREATE ROLE {owner} LOGIN")
    cur.execute(f"GRANT jobq_tenant TO {owner}")  # what 0003 asks of an administrator
    cur.execute(f'CREATE DATABASE "{database}" OWNER {owner}')
    url = make_url(ADMIN_URL).set(username=owner, database=database).render_as_string(
        hide_password=False)

    def migrate(role: str) -> None:
        cfg = db.alembic_config(url)
        cfg.attributes.update(configure_logger=False, handler_role=role, handler_password=None)
        command.upgrade(cfg, "head")

    try:
        with pytest.raises(RuntimeError) as stopped:
            migrate(handler)
        assert str(stopped.value) == (
            f"role {handler} does not exist and {owner} may not create roles: a database "
            f"administrator must create it first, e.g. CREATE ROLE {handler} LOGIN PASSWORD "
            "'...' (see the README, Tenant isolation)")
        for unfit, says in ((owner, "is the migrating user itself"),
                            ("postgres", "is a superuser")):
            with pytest.raises(RuntimeError, match=f"role {unfit} cannot run handlers: it {says}"):
                migrate(unfit)

        cur.execute(f"CREATE ROLE {handler} LOGIN")  # as the administrator is asked to
        migrate(handler)
        engine = create_engine(db.sqlalchemy_url(url))
        try:
            with engine.connect() as conn:
                assert rls_state(conn)["students"][2][POLICY] == [handler]
                assert conn.execute(text("SELECT has_table_privilege(:r, 'students', 'SELECT')"),
                                    {"r": handler}).scalar() is True
        finally:
            engine.dispose()
    finally:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        cur.execute(f"DROP ROLE IF EXISTS {handler}")
        cur.execute(f"DROP ROLE IF EXISTS {owner}")
        admin.close()


def test_an_insert_of_the_original_shape_still_works_for_the_engine(tenant):
    """The seed's callers insert as the tables' owner: its policy lets them."""
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

    handler = ROLE
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

