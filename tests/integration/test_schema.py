"""The schema Alembic builds is the schema the models declare, and it goes down cleanly."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from app.store import db
from app.store.models import Base

# Migrations grant to the cluster's roles: two at the same moment fail ("tuple concurrently
# updated"). The files that migrate scratch databases run in one process, one after the other,
# and each of their tests holds the lock every test run's migrations take.
pytestmark = [pytest.mark.xdist_group("migrations"), pytest.mark.usefixtures("migrations_alone")]


@pytest.fixture
def migrated(scratch_database):
    """The scratch database migrated to head: its Alembic config and an engine on it."""
    cfg = db.alembic_config(scratch_database)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    engine = create_engine(db.sqlalchemy_url(scratch_database))
    yield cfg, engine
    engine.dispose()


def _models_metadata():
    import contextlib

    with contextlib.suppress(ModuleNotFoundError):
        import handlers.models  # noqa: F401  (domain tables share the metadata)
    return Base.metadata


@pytest.mark.smoke
def test_migrated_schema_equals_the_models():
    engine = db.engine()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "compare_server_default": True})
        diff = compare_metadata(ctx, _models_metadata())
    assert diff == [], f"migrations and models disagree: {diff}"


def test_downgrade_to_base_and_up_again(scratch_database):
    cfg = db.alembic_config(scratch_database)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = create_engine(db.sqlalchemy_url(scratch_database))
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        command.upgrade(cfg, "head")
        assert {"tenants", "job_executions", "job_events"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_original_insert_still_works_with_the_original_defaults():
    with db.engine().begin() as conn:
        tenant = conn.execute(text("INSERT INTO tenants (name) VALUES ('원본 학원') RETURNING id")).scalar()
        row = conn.execute(text(
            "INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
            "VALUES (:t, 'attendance.exec.notify_guardians_late', "
            "'{\"student_id\": \"s-1\", \"notify_time\": \"2026-11-26T09:05:00+09:00\"}') "
            "RETURNING status, retry_count, max_retries, created_at, executed_at, completed_at, "
            "error_message, id"), {"t": tenant}).one()
        events = conn.execute(text("SELECT kind, detail FROM job_events WHERE job_id = :j"),
                              {"j": row.id}).all()
    assert (row.status, row.retry_count, row.max_retries) == ("pending", 0, 3)
    assert row.created_at is not None
    assert (row.executed_at, row.completed_at, row.error_message) == (None, None, None)
    assert events == [("created", {"source": "sql"})]


def test_hot_queries_use_an_index(migrated):
    """On a table of mostly finished jobs, the sweep, recovery and listings read indexes."""
    _, engine = migrated
    with engine.begin() as conn:
        conn.execute(text("""
            WITH t AS (INSERT INTO tenants (name) SELECT 'academy ' || i
                         FROM generate_series(1, 300) i RETURNING id)
            INSERT INTO job_executions (tenant_id, intent_key, status, created_at,
                                        completed_at, lease_expires_at)
            SELECT (SELECT id FROM t ORDER BY id OFFSET (i % 300) LIMIT 1),
                   'family.exec.intent_' || (i % 1000),
                   CASE WHEN i % 500 = 0 THEN 'pending'
                        WHEN i % 500 = 1 THEN 'processing' ELSE 'completed' END,
                   now() - make_interval(secs => i),
                   now() - make_interval(secs => i),
                   CASE WHEN i % 500 = 1 THEN now() END
              FROM generate_series(1, 30000) i
        """))
        conn.execute(text("ANALYZE"))
        tenant = conn.execute(text("SELECT id FROM tenants LIMIT 1")).scalar()
        job = conn.execute(text("SELECT id FROM job_executions LIMIT 1")).scalar()
        queries = {
            "ix_job_executions_due": "SELECT id FROM job_executions WHERE status = 'pending' "
            "AND coalesce(run_at, created_at) <= now() "
            "ORDER BY coalesce(run_at, created_at) LIMIT 10",
            "ix_job_executions_lease": "SELECT id FROM job_executions WHERE "
            "status = 'processing' AND lease_expires_at < now() LIMIT 10",
            "ix_job_executions_tenant_created": f"SELECT id FROM job_executions WHERE "
            f"tenant_id = '{tenant}' ORDER BY created_at DESC LIMIT 20",
            "ix_job_executions_intent_created": "SELECT id FROM job_executions WHERE "
            "intent_key = 'family.exec.intent_7' ORDER BY created_at DESC LIMIT 20",
            "ix_job_events_job_at": f"SELECT * FROM job_events WHERE job_id = '{job}' "
            "ORDER BY at",
        }
        plans = {
            index: "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + q)))
            for index, q in queries.items()
        }
    for index, plan in plans.items():
        assert index in plan and "Seq Scan" not in plan, f"expected {index}:\n{plan}"


def test_the_sweep_reads_published_jobs_on_their_own_index(migrated):
    """With most of the table published long ago (every finished job was) and a backlog of
    pending jobs, the sweep's look for lost messages reads ix_job_executions_published (the
    few jobs the broker holds), not the whole backlog (0007)."""
    from app.store import jobstore

    _, engine = migrated
    with engine.begin() as conn:
        conn.execute(text("""
            WITH t AS (INSERT INTO tenants (name) SELECT 'academy ' || i
                         FROM generate_series(1, 50) i RETURNING id)
            INSERT INTO job_executions (tenant_id, intent_key, status, queue, created_at,
                                        published_at, completed_at)
            SELECT (SELECT id FROM t ORDER BY id OFFSET (i % 50) LIMIT 1),
                   'system.exec.echo', CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'completed' END,
                   'realtime', now() - make_interval(secs => i),
                   CASE WHEN i % 10 <> 0 THEN now() - make_interval(secs => i) END,
                   CASE WHEN i % 10 <> 0 THEN now() - make_interval(secs => i) END
              FROM generate_series(1, 30000) i
        """))
        conn.execute(text("ANALYZE"))
        plan = "\n".join(r[0] for r in conn.execute(
            text("EXPLAIN " + jobstore.LOCK_DUE.text),
            {"batch": 500, "republish_after": 300.0, "broker_since": None}))
    assert "ix_job_executions_published" in plan, plan


def test_the_published_index_goes_down_and_up_again(migrated):
    cfg, engine = migrated

    def indexes() -> set[str]:
        with engine.connect() as conn:
            return {i["name"] for i in inspect(conn).get_indexes("job_executions")}

    assert "ix_job_executions_published" in indexes()
    command.downgrade(cfg, "0006_api")
    assert "ix_job_executions_published" not in indexes()
    assert "ix_job_executions_in_flight" in indexes()
    command.upgrade(cfg, "head")
    assert "ix_job_executions_published" in indexes()


def test_the_api_migration_goes_down_with_its_data_and_up_again(migrated):
    """0006_api down to 0004: a job still awaiting approval is cancelled (0004 knows no such
    status), the keys and the API's binding go; up again, all of it is back."""
    cfg, engine = migrated
    with engine.begin() as conn:
        tenant = conn.execute(text(
            "INSERT INTO tenants (name) VALUES ('승인 학원') RETURNING id")).scalar()
        job = conn.execute(text(
            "INSERT INTO job_executions (tenant_id, intent_key, status, requested_by, "
            "approval_expires_at) VALUES (:t, 'system.exec.echo', 'awaiting_approval', "
            "'api:web', now() + interval '1 day') RETURNING id"), {"t": tenant}).scalar()
        conn.execute(text("INSERT INTO api_keys (tenant_id, name, prefix, key_hash, scopes) "
                          "VALUES (:t, 'web', 'abcdefgh', 'h', '{jobs:read}')"), {"t": tenant})
    command.downgrade(cfg, "0004")
    with engine.connect() as conn:
        status, error = conn.execute(text(
            "SELECT status, error_message FROM job_executions WHERE id = :j"),
            {"j": job}).one()
        tables = set(inspect(conn).get_table_names())
        job_id_nullable = conn.execute(text(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'jobq_bindings' AND column_name = 'job_id'")).scalar()
        bind_tenant = conn.execute(text(
            "SELECT to_regprocedure('jobq_bind_tenant(uuid, text)')")).scalar()
    assert (status, error) == ("cancelled", "approval withdrawn by a schema downgrade")
    assert not {"api_keys", "jobq_api_secret"} & tables
    assert job_id_nullable == "NO" and bind_tenant is None
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        assert {"api_keys", "jobq_api_secret"} <= set(inspect(conn).get_table_names())
        assert conn.execute(text("SELECT count(*) FROM jobq_api_secret")).scalar() == 1


def test_jobs_refused_before_0008_whose_parameters_were_not_kept_are_flagged(migrated):
    """Up from 0007, a job refused for its parameters themselves (the refusals that drop them)
    needs new ones to run again; a refusal of something else, a plain insert without
    parameters, and a job that ran do not."""
    cfg, engine = migrated
    command.downgrade(cfg, "0007_published")
    with engine.begin() as conn:
        tenant = conn.execute(text(
            "INSERT INTO tenants (name) VALUES ('이전 학원') RETURNING id")).scalar()

        def job(status: str, source: str, error: str | None, executed: bool = False) -> str:
            return conn.execute(text(
                "INSERT INTO job_executions (tenant_id, intent_key, status, source, "
                "error_message, executed_at) VALUES (:t, 'billing.exec.apply_late_fees', "
                ":s, :src, :e, CASE WHEN :x THEN now() END) RETURNING id::text"),
                {"t": tenant, "s": status, "src": source, "e": error, "x": executed}).scalar()

        dropped = job("failed", "dispatch", "intent_params is 70,044 bytes of JSON; the limit is "
                                            "65,536 (JOBQ_MAX_PARAMS_BYTES)")
        not_json = job("failed", "api", "intent_params must be a JSON object, not list")
        run_at = job("failed", "cli", "run_at 'tomorrow' is not an ISO 8601 time")
        ran = job("failed", "dispatch", "intent_params is odd", executed=True)
        plain = job("pending", "sql", None)
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        flagged = dict(conn.execute(text(
            "SELECT id::text, params_dropped FROM job_executions")).all())
    assert flagged == {dropped: True, not_json: True, run_at: False, ran: False, plain: False}


def test_0009_stops_naming_keys_already_shared_across_intents_and_changes_nothing(migrated):
    cfg, engine = migrated
    command.downgrade(cfg, "0008_params_not_kept")
    with engine.begin() as conn:
        tenant = conn.execute(text(
            "INSERT INTO tenants (name) VALUES ('공유 학원') RETURNING id")).scalar()
        ids = [conn.execute(text(
            "INSERT INTO job_executions (tenant_id, intent_key, idempotency_key) "
            "VALUES (:t, :i, 'order-7') RETURNING id::text"), {"t": tenant, "i": intent}).scalar()
            for intent in ("system.exec.echo", "system.exec.sleep")]
    with pytest.raises(RuntimeError) as stopped:
        command.upgrade(cfg, "head")
    message = str(stopped.value)
    assert message.startswith("1 idempotency key(s) each name jobs of more than one intent")
    assert f"tenant {tenant} key 'order-7': system.exec.echo, system.exec.sleep" in message
    assert "UPDATE job_executions SET idempotency_key = NULL WHERE id = ..." in message
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() \
            == "0008_params_not_kept"
        assert conn.execute(text("SELECT count(*) FROM job_executions WHERE "
                                 "idempotency_key = 'order-7'")).scalar() == 2
    with engine.begin() as conn:
        conn.execute(text("UPDATE job_executions SET idempotency_key = NULL WHERE id = :j"),
                     {"j": ids[0]})
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        names = {i["name"] for i in inspect(conn).get_indexes("job_executions")}
    assert "uq_job_executions_tenant_idempotency" in names
    assert "uq_job_executions_idempotency" not in names
