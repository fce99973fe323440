"""Bad input, refused with a message that names what is wrong: through ``dispatch_intent`` (an
in-thread worker on the real broker) and ``submit``, and straight onto a handler queue with kombu.

Every refusal leaves exactly the audit row it should (a ``failed`` row for an active tenant,
nothing for an unknown one), and the worker keeps serving: a normal job completes afterwards.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import signals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app import dispatch_intent, job_id_for, submit
from app.broker.celery_app import celery_app
from app.core.errors import IntentRefused, TenantRefused
from app.core.registry import manifest
from app.core.settings import settings as jobq_settings
from app.store import db
from tests.conftest import KEY_PREFIX, REDIS_URL
from tests.fixtures import event_kinds, job_row, make_tenant, sql, wait_for, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")

#: Each example is a real round trip through Redis and PostgreSQL: a few dozen per property.
PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def academy() -> str:
    """One tenant for the module's properties (hypothesis runs many examples per test)."""
    return make_tenant()


# --- helpers ------------------------------------------------------------------------------------


def job_count(tenant: str) -> int:
    return sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid)",
               t=tenant)[0][0]


def refused_dispatch(tenant: Any, **kwargs: Any) -> tuple[IntentRefused, str]:
    """Dispatch through the worker; the refusal and the job id its audit row has (if any)."""
    result = dispatch_intent.apply_async(kwargs={"tenant_id": tenant, **kwargs})
    with pytest.raises(IntentRefused) as refused:
        result.get(timeout=15, propagate=True)
    assert result.state == "FAILURE"
    return refused.value, job_id_for(result.id)


def refused_submit(tenant: Any, **kwargs: Any) -> IntentRefused:
    """Submit in a session of our own, keeping the refusal's audit row by committing."""
    with db.session() as session:
        with pytest.raises(IntentRefused) as refused:
            submit(session, tenant_id=tenant, **kwargs)
        session.commit()
    return refused.value


def same_json(stored: Any, given: Any) -> bool:
    """Equal as JSON: jsonb keeps numbers as numerics, so 7.2e+16 comes back as an integer."""
    if isinstance(stored, dict) and isinstance(given, dict):
        return stored.keys() == given.keys() and all(same_json(stored[k], given[k])
                                                     for k in stored)
    if isinstance(stored, list) and isinstance(given, list):
        return len(stored) == len(given) and all(map(same_json, stored, given))
    numbers = (int, float)
    if (isinstance(stored, numbers) and isinstance(given, numbers)
            and not isinstance(stored, bool) and not isinstance(given, bool)):
        return float(stored) == float(given)
    return stored == given and type(stored) is type(given)


def assert_refused_row(job_id: str, message: str, *, params: Any = "any") -> dict:
    """The audit row of a refusal: failed, the message, never published, never run."""
    row = job_row(job_id)
    assert row is not None, f"no audit row for refused job {job_id}"
    assert row["status"] == "failed"
    assert row["error_message"] == message
    assert row["published_at"] is None and row["executed_at"] is None
    assert row["retry_count"] == 0 and row["max_retries"] == 0
    if params != "any":
        assert same_json(row["intent_params"], params), (row["intent_params"], params)
    assert event_kinds(job_id) == [(0, "refused")]
    return row


def assert_dispatch_refused(tenant: str, expected: str | list[str], *, params: Any = "any",
                            **kwargs: Any) -> tuple[IntentRefused, str]:
    """Refused through the worker, naming ``expected``, with exactly one audit row; the
    refusal and its row's job id."""
    before = job_count(tenant)
    refusal, job_id = refused_dispatch(tenant, **kwargs)
    message = str(refusal)
    for part in [expected] if isinstance(expected, str) else expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert_refused_row(job_id, message, params=params)
    assert job_count(tenant) == before + 1
    return refusal, job_id


def assert_still_serving(tenant: str) -> None:
    """A normal job runs to completion after whatever came before."""
    job_id = dispatch_intent.delay(tenant_id=tenant, intent_key="system.exec.echo",
                                   intent_params={"still": "serving"}).get(timeout=15)
    assert wait_for_status(job_id, "completed")["result"] == {"still": "serving"}


# --- strategies ---------------------------------------------------------------------------------

#: Text free of the two things PostgreSQL cannot store (NUL, lone surrogates).
storable_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
storable_text = st.text(storable_chars)
json_scalars = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(storable_chars, max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(storable_chars, max_size=8), children, max_size=3),
    max_leaves=10,
)

SQL_LOOKING = [
    "'; DROP TABLE job_executions; --",
    "1' OR '1'='1",
    "Robert'); DROP TABLE students;--",
    "\"; DELETE FROM tenants WHERE 't'='t",
    "$$; TRUNCATE job_events; $$",
    "E'\\\\x00'::bytea",
    "') UNION SELECT id::text, name FROM tenants --",
    "%s %(name)s :name ? $1",
    "jsonb_to_recordset(CAST(:rows AS jsonb))",
    "\\\\'; COMMIT; SET ROLE postgres; --",
]
sql_looking = st.sampled_from(SQL_LOOKING) | st.builds(
    lambda a, b: a + b, st.sampled_from(SQL_LOOKING), storable_text)


def nested(depth: int, leaf: Any = 1, *, lists: bool = False) -> dict[str, Any]:
    """An object ``depth`` containers deep (objects, or objects and lists in turn)."""
    value = leaf
    for level in range(depth - 1):
        value = [value] if lists and level % 2 else {"n": value}
    return {"n": value}


# --- intent_params: shape, types, fields --------------------------------------------------------


def test_params_that_are_not_an_object_are_refused_without_storing_them(academy):
    @PROPERTY
    @given(st.lists(json_values, max_size=3) | st.text(max_size=30) | st.integers()
           | st.floats(allow_nan=False) | st.booleans())
    def check(params):
        assert_dispatch_refused(
            academy, f"intent_params must be a JSON object, not {type(params).__name__}",
            params=None, intent_key="system.exec.echo", intent_params=params)

    check()
    assert_still_serving(academy)


def test_wrong_type_for_a_declared_field_is_refused_naming_the_field(academy):
    def number_like(value: Any) -> bool:
        if isinstance(value, bool | int | float):
            return True
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False

    @PROPERTY
    @given(json_values.filter(lambda v: not number_like(v)))
    def check(seconds):
        params = {"seconds": seconds}
        assert_dispatch_refused(
            academy, ["invalid intent_params for 'system.exec.sleep': ", "seconds: "],
            params=params, intent_key="system.exec.sleep", intent_params=params)

    check()
    assert_still_serving(academy)


def test_extra_fields_are_refused_naming_each(academy):
    @PROPERTY
    @given(st.lists(st.text(st.characters(categories=("L", "N", "P"), include_characters=" "),
                            min_size=1,
                            max_size=20).filter(lambda k: "seconds" not in k),
                    min_size=1, max_size=3, unique=True))
    def check(extras):
        params = {"seconds": 0, **{key: 1 for key in extras}}
        refusal, _ = assert_dispatch_refused(
            academy, [f"{key}: Extra inputs are not permitted" for key in extras],
            intent_key="system.exec.sleep", intent_params=params)
        assert "seconds" not in str(refusal).split(": ", 1)[1]

    check()
    assert_still_serving(academy)


@pytest.mark.parametrize("intent", [i for i in manifest
                                    if any(f.is_required()
                                           for f in i.params_model.model_fields.values())],
                         ids=lambda i: i.key)
def test_every_missing_required_field_is_named(academy, intent):
    required = [n for n, f in intent.params_model.model_fields.items() if f.is_required()]
    before = job_count(academy)
    refusal = refused_submit(academy, intent_key=intent.key, intent_params={})
    for name in required:
        assert f"{name}: Field required" in str(refusal)
    assert refusal.field == f"intent_params.{required[0]}"
    assert_refused_row(refusal.job_id, str(refusal), params={})
    assert job_count(academy) == before + 1


def test_a_long_list_of_problems_is_cut_short(academy):
    params = {f"extra_{i}": i for i in range(500)}
    refusal, _ = assert_dispatch_refused(academy, "and 490 more problems",
                                      intent_key="system.exec.loaded_handlers",
                                      intent_params=params)
    assert len(str(refusal)) < 1000


@pytest.mark.parametrize(("shape", "params"), [
    ("one long string", {"blob": "x" * 70_000}),
    ("many keys", {f"k{i:05}": i for i in range(9_000)}),
    ("a long list", {"ids": list(range(20_000))}),
    ("three-byte characters", {"note": "가" * 22_000}),
])
def test_huge_params_are_refused_and_not_stored(academy, shape, params):
    refusal, _ = assert_dispatch_refused(
        academy, ["bytes of JSON; the limit is 65,536 (JOBQ_MAX_PARAMS_BYTES)"], params=None,
        intent_key="system.exec.echo", intent_params=params)
    assert len(str(refusal)) < 200


def test_deeply_nested_params_are_refused_and_not_stored(academy):
    limit = jobq_settings.max_params_depth

    @PROPERTY
    @given(st.integers(limit + 1, 400), st.booleans())
    def check(depth, lists):
        assert_dispatch_refused(
            academy, f"intent_params is nested more than {limit} levels deep", params=None,
            intent_key="system.exec.echo", intent_params=nested(depth, lists=lists))

    check()
    # Deeper than any JSON encoder recurses: only submit takes a Python object like this.
    refusal = refused_submit(academy, intent_key="system.exec.echo",
                             intent_params=nested(100_000))
    assert f"nested more than {limit} levels deep" in str(refusal)
    assert_refused_row(refusal.job_id, str(refusal), params=None)
    # Just within the limit is fine.
    ok = dispatch_intent.delay(tenant_id=academy, intent_key="system.exec.echo",
                               intent_params=nested(limit - 1)).get(timeout=15)
    assert wait_for_status(ok, "completed")["result"] == nested(limit - 1)
    assert_still_serving(academy)


# --- values JSON cannot carry, or PostgreSQL cannot store ---------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_infinity_are_refused_naming_where(academy, bad):
    params = {"outer": {"inner": [1, bad]}}
    assert_dispatch_refused(academy, f"intent_params.outer.inner[1]: {bad!r} is not a JSON number",
                            params=None, intent_key="system.exec.echo", intent_params=params)


@pytest.mark.parametrize(("value", "named"), [
    (b"bytes", "bytes is not a JSON value"),
    (dt.datetime(2026, 3, 1, 9, 0), "datetime is not a JSON value (send an ISO 8601 string)"),
    (dt.date(2026, 3, 1), "date is not a JSON value (send an ISO 8601 string)"),
    ({1, 2}, "set is not a JSON value"),
    (decimal.Decimal("1.5"), "Decimal is not a JSON value"),
    (object(), "object is not a JSON value"),
])
def test_python_values_json_cannot_carry_are_refused_naming_where(academy, value, named):
    refusal = refused_submit(academy, intent_key="system.exec.echo",
                             intent_params={"when": {"at": value}})
    assert f"intent_params.when.at: {named}" in str(refusal)
    assert refusal.field == "intent_params.when.at"
    assert_refused_row(refusal.job_id, str(refusal), params=None)


@pytest.mark.parametrize("key", [1, None, ("a", "b")], ids=["int", "none", "tuple"])
def test_keys_that_are_not_strings_are_refused(academy, key):
    refusal = refused_submit(academy, intent_key="system.exec.echo",
                             intent_params={"outer": {key: 1}})
    assert f"intent_params.outer: key {key!r} is not a string" in str(refusal)
    assert_refused_row(refusal.job_id, str(refusal), params=None)


def test_nul_characters_are_refused_naming_where_in_values_and_keys(academy):
    @PROPERTY
    @given(storable_text, storable_text, st.booleans())
    def check(before, after, in_key):
        bad = before + "\x00" + after
        params = {"note": {bad: 1}} if in_key else {"note": [bad]}
        refusal, _ = assert_dispatch_refused(academy, "contains a NUL character", params=None,
                                          intent_key="system.exec.echo", intent_params=params)
        assert str(refusal).startswith("intent_params.note")
        assert "\x00" not in str(refusal)

    check()
    assert_still_serving(academy)


def test_lone_surrogates_are_refused_naming_where(academy):
    # JSON carries "\ud800" as an escape; Python decodes it to text no database can store.
    assert_dispatch_refused(academy, ["intent_params.name", "lone surrogate"], params=None,
                            intent_key="system.exec.echo", intent_params={"name": "a\ud800b"})
    assert_dispatch_refused(academy, ["intent_params", "lone surrogate"], params=None,
                            intent_key="system.exec.echo", intent_params={"\udfff": 1})
    assert_still_serving(academy)


def test_control_characters_other_than_nul_are_stored_and_echoed_verbatim(academy):
    @PROPERTY
    @given(st.dictionaries(st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                                   max_size=6),
                           st.text(st.characters(categories=("Cc", "Cf", "Zl", "Zp", "L"),
                                                 exclude_characters="\x00"),
                                   min_size=1, max_size=12),
                           min_size=1, max_size=4))
    def check(params):
        job_id = dispatch_intent.delay(tenant_id=academy, intent_key="system.exec.echo",
                                       intent_params=params).get(timeout=15)
        row = wait_for_status(job_id, "completed")
        assert row["intent_params"] == params and row["result"] == params

    check()


def test_an_escaped_nul_spelled_out_in_text_is_not_a_nul(academy):
    """A backslash followed by ``u0000`` is six ordinary characters, stored as they are."""
    params = {"path": "C:\\u0000\\data", "regex": "\\\\u0000"}
    job_id = dispatch_intent.delay(tenant_id=academy, intent_key="system.exec.echo",
                                   intent_params=params).get(timeout=15)
    assert wait_for_status(job_id, "completed")["result"] == params


# --- SQL-looking text is data ---------------------------------------------------------------------


def test_sql_looking_strings_in_valid_params_are_stored_verbatim(academy):
    tables = sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0]
    tenants = sql("SELECT count(*) FROM tenants")[0][0]

    @PROPERTY
    @given(st.dictionaries(sql_looking, sql_looking | json_scalars, min_size=1, max_size=3),
           sql_looking)
    def check(params, idempotency_key):
        # Unique per example: a repeated key would rightly return the earlier job.
        key = f"{uuid.uuid4().hex}:{idempotency_key}"[:200]
        job_id = dispatch_intent.delay(tenant_id=academy, intent_key="system.exec.echo",
                                       intent_params=params, idempotency_key=key).get(timeout=15)
        row = wait_for_status(job_id, "completed")
        assert same_json(row["intent_params"], params) and same_json(row["result"], params)
        assert row["idempotency_key"] == key

    check()
    assert sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == tables
    assert sql("SELECT count(*) FROM tenants")[0][0] == tenants


def test_sql_looking_intent_keys_are_refused_and_recorded_verbatim(academy):
    @PROPERTY
    @given(sql_looking.filter(lambda k: len(k) <= 150 and k.isprintable()))
    def check(key):
        _, job_id = assert_dispatch_refused(academy, f"unknown intent key {key!r}",
                                            intent_key=key, intent_params={"a": 1})
        assert job_row(job_id)["intent_key"] == key

    check()
    assert_still_serving(academy)


# --- intent keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [201, 10_000, 1_000_000])
def test_very_long_intent_keys_are_refused_with_a_short_message(academy, length):
    key = "system.exec." + "e" * length
    refusal, job_id = assert_dispatch_refused(academy, "unknown intent key 'system.exec.eee",
                                              intent_key=key)
    assert len(str(refusal)) < 300
    assert len(job_row(job_id)["intent_key"]) == jobq_settings.max_key_length + 1


@pytest.mark.parametrize("key", [5, None, "", ["system.exec.echo"], {"key": 1}, True],
                         ids=["int", "none", "empty", "list", "dict", "bool"])
def test_intent_keys_that_are_not_text_are_refused(academy, key):
    assert_dispatch_refused(academy, "intent_key must be a non-empty string",
                            intent_key=key, intent_params={"kept": True},
                            params={"kept": True})


def test_control_characters_in_an_unknown_intent_key_are_shown_escaped(academy):
    key = "system.exec.\x1b[31mred\x07\u2028x"
    _, job_id = assert_dispatch_refused(
        academy, "unknown intent key 'system.exec.\\x1b[31mred\\x07\\u2028x'", intent_key=key)
    assert job_row(job_id)["intent_key"] == "system.exec.\\x1b[31mred\\x07\\u2028x"


# --- tenants --------------------------------------------------------------------------------------


def test_unknown_tenants_are_refused_and_nothing_is_written(academy):
    total = sql("SELECT count(*) FROM job_executions")[0][0]

    @PROPERTY
    @given(st.uuids())
    def check(stranger):
        refusal, job_id = refused_dispatch(str(stranger), intent_key="system.exec.echo",
                                           intent_params={"x": 1})
        assert str(refusal) == f"unknown tenant {stranger}"
        assert job_row(job_id) is None

    check()
    assert sql("SELECT count(*) FROM job_executions")[0][0] == total
    assert_still_serving(academy)


def test_malformed_tenant_ids_are_refused_and_nothing_is_written(academy):
    total = sql("SELECT count(*) FROM job_executions")[0][0]

    @PROPERTY
    @given(st.text(max_size=100).filter(lambda t: not _is_uuid(t)) | st.integers()
           | st.none() | st.lists(st.integers(), max_size=2) | sql_looking)
    def check(tenant):
        refusal, job_id = refused_dispatch(tenant, intent_key="system.exec.echo")
        assert "is not a UUID" in str(refusal) and str(refusal).startswith("tenant_id ")
        assert "\x00" not in str(refusal) and len(str(refusal)) < 150
        assert job_row(job_id) is None

    check()
    assert sql("SELECT count(*) FROM job_executions")[0][0] == total
    assert_still_serving(academy)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def test_tenant_refusal_through_submit_is_a_tenant_refused_without_a_row():
    suspended = make_tenant(status="suspended")
    for tenant in (str(uuid.uuid4()), suspended, "not-a-tenant"):
        with db.session() as session, pytest.raises(TenantRefused) as refused:
            submit(session, tenant_id=tenant, intent_key="system.exec.echo")
        assert refused.value.field == "tenant_id" and refused.value.job_id is None
    assert job_count(suspended) == 0


# --- run_at, max_retries, idempotency keys --------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "named"), [
    ("run_at", "tomorrow", "run_at 'tomorrow' is not an ISO 8601 time"),
    ("run_at", "2026-02-30T09:00:00", "run_at '2026-02-30T09:00:00' is not an ISO 8601 time"),
    ("run_at", 1767225600, "run_at must be an ISO 8601 string or a datetime, not int"),
    ("run_at", True, "run_at must be an ISO 8601 string or a datetime, not bool"),
    ("run_at", ["2026-03-01"], "run_at must be an ISO 8601 string or a datetime, not list"),
    ("run_at", "9999-12-31T23:59:59-14:00", "run_at '9999-12-31T23:59:59-14:00' is out of range"),
    ("run_at", "0001-01-01T00:00:00", "run_at '0001-01-01T00:00:00' is out of range"),
    ("run_at", "2026-03-01\x00", "is not an ISO 8601 time"),
    ("max_retries", -1, "max_retries -1 must be within 0..25"),
    ("max_retries", 26, "max_retries 26 must be within 0..25"),
    ("max_retries", 10**30, "must be within 0..25"),
    ("max_retries", 2.5, "max_retries must be an integer, not float"),
    ("max_retries", "3", "max_retries must be an integer, not str"),
    ("max_retries", True, "max_retries must be an integer, not bool"),
    ("idempotency_key", "", "idempotency_key must be a non-empty string"),
    ("idempotency_key", "k" * 201, "idempotency_key must be a non-empty string of at most 200"),
    ("idempotency_key", 42, "idempotency_key must be a non-empty string"),
    ("idempotency_key", ["a"], "idempotency_key must be a non-empty string"),
    ("idempotency_key", "a\x00b", "idempotency_key contains a NUL character"),
    ("idempotency_key", "a\ud800b", "idempotency_key contains a lone surrogate"),
])
def test_bad_run_at_max_retries_and_idempotency_keys_are_refused(academy, field, value, named):
    refusal, _ = assert_dispatch_refused(academy, named, intent_key="system.exec.echo",
                                      intent_params={"kept": 1}, params={"kept": 1},
                                      **{field: value})
    assert "\x00" not in str(refusal)


def test_a_good_job_follows_the_refusals(academy):
    assert_still_serving(academy)


# --- submit: the caller's transaction survives a refusal ------------------------------------------


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"intent_key": "no.such.intent", "intent_params": {"a": "\x00"}}, "unknown intent key"),
    ({"intent_key": "no.such.intent", "intent_params": {"a": math.nan}}, "unknown intent key"),
    ({"intent_key": "no.such.intent", "intent_params": nested(5_000)}, "unknown intent key"),
    ({"intent_key": "no.such.intent", "intent_params": {"b": b"\x00"}}, "unknown intent key"),
    ({"intent_key": "no.such.\ud800", "intent_params": {}}, "unknown intent key"),
    ({"intent_key": "system.exec.echo", "idempotency_key": "\ud800"}, "lone surrogate"),
    ({"intent_key": "system.exec.sleep", "intent_params": {"seconds": "x", "y": "\ud800"}},
     "lone surrogate"),
    ({"intent_key": "system.exec.echo", "run_at": "0001-01-01"}, "out of range"),
])
def test_a_refused_submit_leaves_the_callers_transaction_usable(academy, kwargs, named):
    with db.session() as session:
        good = submit(session, tenant_id=academy, intent_key="system.exec.echo",
                      intent_params={"kept": "with the refusal"})
        with pytest.raises(IntentRefused) as refused:
            submit(session, tenant_id=academy, **kwargs)
        session.commit()
    assert named in str(refused.value)
    assert_refused_row(refused.value.job_id, str(refused.value))
    assert wait_for_status(good, "completed")["result"] == {"kept": "with the refusal"}


@pytest.mark.parametrize("field", ["job_id", "parent_id"])
@pytest.mark.parametrize("value", ["abc", "'; DROP TABLE job_executions; --", "1234"])
def test_malformed_job_and_parent_ids_are_refused_before_anything_is_written(
        academy, field, value):
    before = job_count(academy)
    with db.session() as session:
        with pytest.raises(IntentRefused) as refused:
            submit(session, tenant_id=academy, intent_key="system.exec.echo",
                   **{field: value})
        assert session.execute(text("SELECT 1")).scalar() == 1  # the transaction is fine
        session.commit()
    assert str(refused.value) == f"{field} {value!r} is not a UUID"
    assert refused.value.field == field and refused.value.job_id is None
    assert job_count(academy) == before


# --- messages straight onto a handler queue -------------------------------------------------------


def _publish_raw(body: Any, *, headers: dict[str, Any] | None = None,
                 content_type: str = "application/json", serializer: str | None = None,
                 queue: str = "realtime") -> str:
    """Put one message on ``queue`` as any client could, past Celery's own checks."""
    message_id = str(uuid.uuid4())
    base = {"lang": "py", "task": "system.exec.echo", "id": message_id, "root_id": message_id,
            "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None}
    with celery_app.connection_for_write() as conn:
        producer = conn.Producer()
        options: dict[str, Any] = (
            {"content_type": content_type, "content_encoding": "utf-8"}
            if isinstance(body, bytes) else {"serializer": serializer or "json"})
        producer.publish(body, exchange=queue, routing_key=queue,
                         headers={**base, **(headers or {})}, **options)
    return message_id


class _Planted:
    """Unpickling this would run code: it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _served_after(tenant: str) -> None:
    """A real job sent after the bad message completes, and the queue is empty again."""
    assert_still_serving(tenant)
    queue = redis.Redis.from_url(REDIS_URL)
    wait_for(lambda: queue.llen(f"{KEY_PREFIX}realtime") == 0, 10,
             message="the realtime queue to be empty (nothing requeued)")


@pytest.fixture
def outcomes() -> Iterator[dict[str, str]]:
    """What the in-thread worker did with each message id: rejected, unknown or ran."""
    seen: dict[str, str] = {}

    def rejected(message=None, exc=None, **_: Any) -> None:
        seen[str((message.headers or {}).get("id"))] = f"rejected: {exc}"

    def unknown(message=None, name=None, id=None, **_: Any) -> None:
        seen[str(id)] = f"unknown task {name!r}"

    def ran(task_id=None, **_: Any) -> None:
        seen[str(task_id)] = "ran"

    signals.task_rejected.connect(rejected, weak=False)
    signals.task_unknown.connect(unknown, weak=False)
    signals.task_postrun.connect(ran, weak=False)
    yield seen
    signals.task_rejected.disconnect(rejected)
    signals.task_unknown.disconnect(unknown)
    signals.task_postrun.disconnect(ran)


def test_a_pickle_message_is_refused_unopened_and_the_worker_keeps_serving(
        academy, tmp_path, outcomes):
    marker = tmp_path / "unpickled"
    before = sql("SELECT count(*) FROM job_executions")[0][0]
    body = ((), {"tenant_id": academy, "intent_params": _Planted(marker)}, {})
    message_id = _publish_raw(body, serializer="pickle")
    assert pickle.loads(pickle.dumps(_Planted(tmp_path / "control"))) is None  # it would run
    assert (tmp_path / "control").exists()

    _served_after(academy)
    assert "Refusing to deserialize untrusted content of type pickle" in outcomes[message_id]
    assert not marker.exists()
    assert job_row(message_id) is None
    assert sql("SELECT count(*) FROM job_executions")[0][0] == before + 1  # the real job only


#: Each bad message, and what the worker does with it: rejects it (the reason), finds no such
#: task, runs it into an error of its own (nothing to audit), or cannot decode it at all (it is
#: acked and logged; Celery sends no signal for that).
def _bad_messages(tenant: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    yield "not JSON", {"body": b"{not json at all"}, "undecodable"
    yield "not UTF-8", {"body": b"\xff\xfe\x00["}, "undecodable"
    yield ("a JSON object where the protocol wants a list", {"body": {"tenant_id": tenant}},
           "rejected: malformed message for task 'system.exec.echo': its body is not "
           "[args, kwargs, embed] but a dict")
    yield ("an empty list", {"body": []},
           "rejected: malformed message for task 'system.exec.echo': its body is not "
           "[args, kwargs, embed] but a list of 0")
    yield ("kwargs that are a list", {"body": [[], [tenant], {}]},
           "rejected: malformed message for task 'system.exec.echo': its kwargs are a list")
    yield ("args that are text", {"body": ["tenant", {}, {}]},
           "rejected: malformed message for task 'system.exec.echo': its args are a str")
    yield ("a task id that is not text", {"body": [[], {}, {}], "headers": {"id": 7}},
           "rejected: malformed message for task 'system.exec.echo': its task id is 7")
    yield ("no task name", {"body": [[], {"tenant_id": tenant}, {}], "headers": {"task": None}},
           "unknown task None")
    yield ("an unknown task", {"body": [[], {"tenant_id": tenant}, {}],
                               "headers": {"task": "system.exec.nope"}},
           "unknown task 'system.exec.nope'")
    yield "a tenant id of the wrong type", {"body": [[], {"tenant_id": 12345}, {}]}, "ran"
    yield "too many arguments", {"body": [[tenant, {}, None, 1, 2], {}, {}]}, "ran"
    yield ("an unexpected keyword", {"body": [[], {"tenant_id": tenant, "colour": "red"}, {}]},
           "ran")
    yield ("a job id with no row", {"body": [[], {"tenant_id": tenant,
                                                  "job_id": str(uuid.uuid4())}, {}]}, "ran")
    yield ("a message id that is not a UUID", {"body": [[], {"tenant_id": tenant}, {}],
                                               "headers": {"id": "'; DROP TABLE x; --"}}, "ran")
    yield ("JSON nested beyond any parser's patience",
           {"body": ("[" * 100_000 + "]" * 100_000).encode()}, "undecodable")
    yield ("the pickle content type", {"body": b"\x80\x04K\x01.",
                                       "content_type": "application/x-python-serialize"},
           "rejected: Refusing to deserialize untrusted content of type pickle")


@pytest.mark.parametrize("case", [name for name, _, _ in _bad_messages("t")])
def test_a_malformed_message_is_dropped_without_a_row_and_the_worker_keeps_serving(
        academy, case, outcomes):
    spec, expected = next((spec, outcome) for name, spec, outcome in _bad_messages(academy)
                          if name == case)
    before = sql("SELECT count(*) FROM job_executions")[0][0]
    message_id = _publish_raw(spec["body"], headers=spec.get("headers"),
                              content_type=spec.get("content_type", "application/json"))
    headers_id = str((spec.get("headers") or {}).get("id", message_id))
    _served_after(academy)
    if expected != "undecodable":
        # The worker has dealt with it (a run may finish a moment after the real job).
        outcome = wait_for(lambda: outcomes.get(headers_id), 10, message=f"{case} handled")
        assert outcome.startswith(expected), outcome
    assert sql("SELECT count(*) FROM job_executions WHERE id::text = :i", i=headers_id) == [(0,)]
    assert sql("SELECT count(*) FROM job_executions")[0][0] == before + 1  # the real job only


def test_a_message_with_bad_parameters_for_a_real_tenant_leaves_only_its_refusal(
        academy, outcomes):
    """A direct call (no job id) is audited like any dispatch: refused, with its reason."""
    before = job_count(academy)
    message_id = _publish_raw([[], {"tenant_id": academy, "intent_params": "not an object"}, {}],
                              headers={"task": "system.exec.sleep"})
    _served_after(academy)
    wait_for(lambda: outcomes.get(message_id) == "ran", 10, message="the message to run")
    assert_refused_row(message_id, "intent_params must be a JSON object, not str", params=None)
    assert job_count(academy) == before + 2  # the refusal and the real job
