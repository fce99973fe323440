"""app/store/schema.sql says what the migrations build: every function and trigger of the
migrated database equals the one the file creates in an empty database with the models' tables,
as PostgreSQL reads them back (``pg_get_functiondef``, ``pg_get_triggerdef``), up to whitespace.

So a function changed without a migration, or a migration that forgot the file, fails here,
named, with the difference."""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import Connection, create_engine, text

import app.store
from app.store import db
from app.store.models import Base

SCHEMA_SQL = Path(app.store.__file__).parent / "schema.sql"

#: Every function of the schema that no extension brought, by signature, with its definition.
FUNCTIONS = text(
    """
    SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid)
      FROM pg_proc p
     WHERE p.pronamespace = current_schema()::regnamespace
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                          AND d.deptype = 'e')
    """
)

#: Every trigger of the schema's tables that a user wrote (not a foreign key's), by table and
#: name, with its definition.
TRIGGERS = text(
    """
    SELECT t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace
    """
)


def _words(definition: str) -> str:
    return " ".join(definition.split())


def _lines(definition: str) -> list[str]:
    return [" ".join(line.split()) for line in definition.splitlines() if line.strip()]


def differences(migrated: Connection, declared: Connection) -> list[str]:
    """What differs between the functions and triggers of the migrated database and those of
    the database schema.sql built, one message each."""
    found = []
    for kind, query in (("function", FUNCTIONS), ("trigger", TRIGGERS)):
        have = dict(migrated.execute(query).all())
        said = dict(declared.execute(query).all())
        for name in sorted(have.keys() - said.keys()):
            found.append(f"{kind} {name} is in the migrated database but not in "
                         f"app/store/schema.sql: add it there as the migrations leave it")
        for name in sorted(said.keys() - have.keys()):
            found.append(f"{kind} {name} is in app/store/schema.sql but no migration makes it: "
                         "write the migration, or take it out of the file")
        for name in sorted(have.keys() & said.keys()):
            if _words(have[name]) != _words(said[name]):
                diff = "\n".join(difflib.unified_diff(
                    _lines(have[name]), _lines(said[name]), "the migrations",
                    "app/store/schema.sql", lineterm="", n=1))
                found.append(f"{kind} {name} differs between the migrations and "
                             f"app/store/schema.sql (a change without a migration, or a "
                             f"migration that forgot the file):\n{diff}")
    return found


@pytest.fixture(scope="module")
def declared() -> Iterator[Connection]:
    """A database of its own with the models' tables and what schema.sql creates."""
    from tests.conftest import ADMIN_URL, _database_url

    name = f"jobq_schema_sql_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(db.sqlalchemy_url(_database_url(ADMIN_URL, name)))
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            # As psql would run it: one script, its own % signs untouched.
            conn.exec_driver_sql(SCHEMA_SQL.read_text(),
                                 execution_options={"no_parameters": True})
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_every_function_and_trigger_of_the_migrations_is_as_schema_sql_says(declared):
    with db.engine().connect() as migrated:
        found = differences(migrated, declared)
        checked = {row[0] for row in migrated.execute(FUNCTIONS)}
    declared.rollback()
    assert not found, "\n\n".join(found)
    assert {"jobq_feed(text,integer)", "jobq_fast_room(text,uuid,integer)",
            "jobq_bind(uuid,text)", "jobq_bind_tenant(uuid,text)",
            "jobq_record_created()"} <= checked, checked


def test_a_function_that_differs_is_named_with_its_difference(declared):
    """The check itself, on the database schema.sql built: one function changed, one gone (a
    migration's new function the file forgot) and one more (in the file, in no migration);
    undone afterwards (DDL is transactional)."""
    room = declared.execute(text(
        "SELECT pg_get_functiondef('jobq_fast_room(text, uuid, int)'::regprocedure)")).scalar_one()
    try:
        declared.exec_driver_sql(room.replace("THEN 0", "THEN 1", 1),
                                 execution_options={"no_parameters": True})
        declared.exec_driver_sql("DROP TRIGGER jobq_fair_updated ON job_executions")
        declared.exec_driver_sql("DROP FUNCTION jobq_fair_flag_updated()")
        declared.exec_driver_sql("CREATE FUNCTION jobq_extra() RETURNS int LANGUAGE sql "
                                 "AS 'SELECT 1'")
        with db.engine().connect() as migrated:
            found = differences(migrated, declared)
    finally:
        declared.rollback()
    assert [f.split(" ", 2)[:2] for f in found] == [
        ["function", "jobq_fair_flag_updated()"],
        ["function", "jobq_extra()"],
        ["function", "jobq_fast_room(text,uuid,integer)"],
        ["trigger", "job_executions.jobq_fair_updated"],
    ], found
    assert "is in the migrated database but not in app/store/schema.sql" in found[0]
    assert "is in app/store/schema.sql but no migration makes it" in found[1]
    assert ("-WHEN EXISTS (SELECT 1 FROM fair_queue f WHERE f.queue = p_queue AND f.ready) "
            "THEN 0\n+WHEN EXISTS (SELECT 1 FROM fair_queue f WHERE f.queue = p_queue "
            "AND f.ready) THEN 1") in found[2], found[2]
