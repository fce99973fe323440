"""Request validation (app.core.validation), before anything is written: every problem is
refused naming its field and what is wrong, a secret's value is never echoed, and what cannot
be stored (NUL, lone surrogates, NaN, non-JSON values, too big, too deep) is named by its path."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from app.core.errors import IntentRefused, TenantRefused
from app.core.registry import manifest
from app.core.validation import (
    Refusal,
    as_uuid,
    check_idempotency_key,
    check_max_retries,
    check_params,
    dispatch_request,
    job_id_for,
    parse_run_at,
    request_fingerprint,
    unknown_intent,
    validate_params,
)

SLEEP = manifest.get("system.exec.sleep")
SECRETS = manifest.get("test.exec.use_secrets")


def test_parameters_are_validated_against_the_intents_model_and_normalised():
    assert check_params(SLEEP, {"seconds": "2.5"}) == {"seconds": 2.5}
    with pytest.raises(Refusal) as refused:
        check_params(SLEEP, {"seconds": -1, "colour": "red"})
    message = str(refused.value)
    assert message.startswith("invalid intent_params for 'system.exec.sleep': ")
    assert "seconds: Input should be greater than or equal to 0 (got -1)" in message
    assert "colour: Extra inputs are not permitted (got 'red')" in message
    assert "pydantic" not in message and "https://" not in message
    assert refused.value.field == "intent_params.seconds"


def test_a_missing_field_is_named_without_a_value():
    with pytest.raises(IntentRefused, match=r"seconds: Field required$"):
        validate_params(SLEEP, {})


def test_a_secret_parameters_bad_value_is_never_echoed():
    with pytest.raises(Refusal) as refused:
        check_params(SECRETS, {"card_number": ["4111-1111"], "api_token": "t"})
    assert "4111" not in str(refused.value) and "(value hidden: a secret)" in str(refused.value)


@pytest.mark.parametrize(("params", "field", "says"), [
    ({"note": "a\x00b"}, "intent_params.note", "contains a NUL character"),
    ({"note": "x\ud800"}, "intent_params.note", "contains a lone surrogate"),
    ({"n": math.nan}, "intent_params.n", "nan is not a JSON number"),
    ({"when": dt.date(2026, 3, 1)}, "intent_params.when", "send an ISO 8601 string"),
    ({"s": {1, 2}}, "intent_params.s", "set is not a JSON value"),
    ({"big": "x" * 70_000}, "intent_params", "the limit is 65,536 (JOBQ_MAX_PARAMS_BYTES)"),
])
def test_what_postgresql_cannot_store_is_named_by_its_path(params, field, says):
    with pytest.raises(Refusal) as refused:
        check_params(manifest.get("system.exec.echo"), params)
    assert refused.value.field == field and says in str(refused.value)


def test_nesting_deeper_than_the_limit_is_refused():
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(Refusal, match="nested more than 32 levels deep"):
        check_params(manifest.get("system.exec.echo"), deep)


def test_run_at_is_iso_8601_and_naive_times_are_the_academies():
    assert parse_run_at("2026-03-01T02:00:00+09:00") == dt.datetime(2026, 2, 28, 17, 0, tzinfo=dt.UTC)
    assert parse_run_at("2026-03-01T02:00:00") == dt.datetime(2026, 2, 28, 17, 0, tzinfo=dt.UTC)
    assert parse_run_at(None) is None and parse_run_at("") is None
    with pytest.raises(Refusal, match="run_at 'soon' is not an ISO 8601 time"):
        parse_run_at("soon")
    with pytest.raises(Refusal, match="run_at must be an ISO 8601 string or a datetime, not int"):
        parse_run_at(17)


def test_max_retries_and_idempotency_keys_are_checked():
    assert check_max_retries(None, SLEEP) == SLEEP.effective_max_retries
    assert check_max_retries(0, SLEEP) == 0
    for bad, says in ((True, "not bool"), ("3", "not str"), (26, "within 0..25")):
        with pytest.raises(Refusal, match=says):
            check_max_retries(bad, SLEEP)
    assert check_idempotency_key("invoice:2026-03") == "invoice:2026-03"
    with pytest.raises(Refusal, match="non-empty string"):
        check_idempotency_key("")
    with pytest.raises(Refusal, match="NUL"):
        check_idempotency_key("a\x00")


def test_ids_must_be_uuids_and_a_bad_tenant_is_a_tenant_refusal():
    assert as_uuid("9F0C6D0E-1A53-4C1E-9D0B-6F7F3F1B2A10", "job_id") \
        == "9f0c6d0e-1a53-4c1e-9d0b-6f7f3f1b2a10"
    with pytest.raises(TenantRefused, match="tenant_id 'acme' is not a UUID"):
        as_uuid("acme", "tenant_id", TenantRefused)


def test_a_dispatch_call_of_the_wrong_shape_names_its_problem():
    ok = dispatch_request(["t", "system.exec.echo"], {"intent_params": {"a": 1}}, job_id=None)
    assert (ok.tenant_id, ok.intent_key, ok.intent_params, ok.call_problem) == (
        "t", "system.exec.echo", {"a": 1}, None)
    typo = dispatch_request([], {"tenant_id": "t", "intent_key": "k", "intent_param": {}}, None)
    assert typo.call_problem.startswith(
        "unknown argument 'intent_param' for dispatch_intent (did you mean 'intent_params'?)")
    assert typo.call_problem_field == "intent_param"
    twice = dispatch_request(["t"], {"tenant_id": "u", "intent_key": "k"}, None)
    assert "got 'tenant_id' both by position and by keyword" in twice.call_problem
    many = dispatch_request(list(range(7)), {}, None)
    assert "takes at most 6 positional arguments" in many.call_problem


def test_a_redelivered_dispatch_derives_the_same_job_id():
    assert job_id_for("abc") == job_id_for("abc") != job_id_for("abd")


def test_a_requests_fingerprint_is_its_intent_parameters_and_time_whatever_their_spelling():
    at = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
    seoul = at.astimezone(dt.timezone(dt.timedelta(hours=9)))
    one = request_fingerprint("billing.exec.apply_late_fees", {"percent": 1, "grace_days": 30}, at)
    assert one == request_fingerprint("billing.exec.apply_late_fees",
                                      {"grace_days": 30, "percent": 1}, seoul)
    assert request_fingerprint("system.exec.echo", None, None) == \
        request_fingerprint("system.exec.echo", {}, None)
    others = {
        request_fingerprint("billing.exec.apply_late_fees", {"percent": 2, "grace_days": 30}, at),
        request_fingerprint("billing.exec.apply_late_fees", {"percent": 1}, at),
        request_fingerprint("billing.exec.apply_late_fees", {"percent": 1, "grace_days": 30},
                            at + dt.timedelta(seconds=1)),
        request_fingerprint("billing.exec.apply_late_fees", {"percent": 1, "grace_days": 30}, None),
        request_fingerprint("billing.exec.send_reminders", {"percent": 1, "grace_days": 30}, at),
        request_fingerprint("billing.exec.apply_late_fees", {"percent": "1", "grace_days": 30}, at),
    }
    assert one not in others and len(others) == 6
    assert len(one) == 64 and int(one, 16) >= 0


def test_an_unknown_intent_is_named_with_the_keys_it_comes_close_to():
    assert unknown_intent("system.exec.ecco", manifest).startswith(
        "unknown intent key 'system.exec.ecco' (did you mean 'system.exec.echo', ")
    assert unknown_intent("nothing.like.it", manifest) == "unknown intent key 'nothing.like.it'"
    long = "system.exec.echo" + "o" * 300  # too long to compare with every key: no hint
    assert unknown_intent(long, manifest) == f"unknown intent key {repr(long)[:197]}..."
    assert unknown_intent(None, manifest) == "unknown intent key None"
