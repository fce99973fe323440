"""The API's pure logic: cursors, time windows, token claims, scopes, Retry-After, settings."""

from __future__ import annotations

import datetime as dt

import pytest

from app.api import schemas
from app.api.auth import _claim
from app.api.keys import KeyRefused, check_scopes, hash_key
from app.api.ratelimit import retry_after_header
from app.core.settings import SettingsError, load


def test_a_cursor_names_the_last_row_and_a_foreign_one_is_refused():
    row = {"created_at": dt.datetime(2026, 11, 29, 12, 0, 1, 5, tzinfo=dt.UTC),
           "id": "3f2a9c1b-8e0d-4c52-9a51-0d7c2f5e4b11"}
    assert schemas.decode_cursor(schemas.encode_cursor(row)) == (row["created_at"], row["id"])
    for bad in ("garbage", "", "eyJhIjogMX0", schemas.encode_cursor(row)[:-4]):
        with pytest.raises(ValueError, match="malformed cursor"):
            schemas.decode_cursor(bad)


def test_since_takes_a_window_or_a_time_in_the_academies_zone():
    assert schemas.parse_since("90m") == (5400.0, None)
    assert schemas.parse_since("7d") == (604800.0, None)
    _, at = schemas.parse_since("2026-11-29T09:00")
    assert at is not None and at.utcoffset() == dt.timedelta(hours=9)
    with pytest.raises(ValueError, match="30m, 1h, 7d"):
        schemas.parse_since("yesterday")


def test_the_tenant_claim_may_be_a_path_into_nested_claims():
    claims = {"sub": "u", "app_metadata": {"tenant_id": "t-1"}, "tenant_id": "top"}
    assert _claim(claims, "app_metadata.tenant_id") == "t-1"
    assert _claim(claims, "tenant_id") == "top"
    assert _claim(claims, "app_metadata.missing") is None
    assert _claim(claims, "sub.deeper") is None


def test_scopes_are_checked_when_a_key_is_made():
    assert check_scopes(["jobs:write", "jobs:read", "jobs:read"]) == ["jobs:read", "jobs:write"]
    with pytest.raises(KeyRefused, match="unknown scope 'jobs:delete'"):
        check_scopes(["jobs:delete"])
    with pytest.raises(KeyRefused, match="at least one scope"):
        check_scopes([])
    assert hash_key("jq_a") != hash_key("jq_b") and len(hash_key("jq_a")) == 64


def test_retry_after_is_whole_seconds_and_never_zero():
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"
    assert retry_after_header(4.0) == "4"


def test_api_settings_are_read_from_the_environment():
    found = load({"JOBQ_API_PORT": "9100", "JOBQ_API_RATE_LIMIT": "2.5",
                  "JOBQ_JWT_DEFAULT_SCOPES": "jobs:read, jobs:approve",
                  "JOBQ_APPROVAL_EXPIRES": "600", "JOBQ_METRICS_TOP_TENANTS": "5"})
    assert (found.api_port, found.api_rate_limit, found.approval_expires_seconds) == (
        9100, 2.5, 600.0)
    assert found.jwt_default_scopes == ("jobs:read", "jobs:approve")
    assert found.metrics_top_tenants == 5 and found.jwt_secret is None
    with pytest.raises(SettingsError, match="JOBQ_APPROVAL_EXPIRES"):
        load({"JOBQ_APPROVAL_EXPIRES": "0"})


def test_since_refuses_a_window_beyond_the_databases_time_range_or_of_nothing():
    assert schemas.parse_since("36500d") == (36500 * 86400.0, None)
    for bad in ("99999999999d", "9999999999999999999999999s", "0s", "0.0m"):
        with pytest.raises(ValueError, match=r"since=.*at most 36500d"):
            schemas.parse_since(bad)


def test_an_intent_filter_is_printable_and_no_longer_than_a_key():
    assert schemas.is_intent_filter("billing.*") and schemas.is_intent_filter("학원.exec.알림")
    for bad in ("", "billing\x00.*", "a\nb", "x" * 201):
        assert not schemas.is_intent_filter(bad)


def test_jwts_on_need_an_audience_and_an_issuer():
    load({}).require_jwt_checks()  # tokens off: nothing to require
    for env, missing in (({"JOBQ_JWT_SECRET": "s"}, "JOBQ_JWT_AUDIENCE and JOBQ_JWT_ISSUER are"),
                         ({"JOBQ_JWT_JWKS_URL": "https://id/jwks", "JOBQ_JWT_AUDIENCE": "a"},
                          "JOBQ_JWT_ISSUER is not set")):
        with pytest.raises(SettingsError, match=missing):
            load(env).require_jwt_checks()
    found = load({"JOBQ_JWT_SECRET": "s", "JOBQ_JWT_AUDIENCE": "a", "JOBQ_JWT_ISSUER": "i",
                  "JOBQ_JWT_LEEWAY": "5"})
    found.require_jwt_checks()
    assert found.jwt_leeway == 5.0 and load({}).jwt_leeway == 30.0


def test_the_body_limit_follows_the_parameters_limit_unless_set():
    assert load({}).api_max_body_bytes == 262144
    assert load({"JOBQ_MAX_PARAMS_BYTES": "1000000"}).api_max_body_bytes == 4000000
    assert load({"JOBQ_API_MAX_BODY_BYTES": "5000"}).api_max_body_bytes == 5000
    with pytest.raises(SettingsError, match="JOBQ_API_MAX_BODY_BYTES"):
        load({"JOBQ_API_MAX_BODY_BYTES": "10"})
    found = load({"JOBQ_API_AUTH_FAILURES": "3", "JOBQ_API_AUTH_FAILURE_WINDOW": "10"})
    assert (found.api_auth_failures, found.api_auth_failure_window) == (3, 10.0)


def test_refused_credentials_are_remembered_briefly_and_in_bounded_number(monkeypatch):
    from app.api import auth

    refusals = auth._Refusals()
    refusals.put("jq_bad", "unknown or revoked API key", now=100.0)
    assert refusals.get("jq_bad", now=100.0 + auth.REFUSED_SECONDS - 1) == (
        "unknown or revoked API key")
    assert refusals.get("jq_bad", now=100.0 + auth.REFUSED_SECONDS) is None
    refusals.put("x" * (auth.REFUSED_LONGEST + 1), "invalid token", now=0.0)
    assert refusals.get("x" * (auth.REFUSED_LONGEST + 1), now=0.0) is None
    monkeypatch.setattr(auth, "REFUSED_MAX", 3)
    for n in range(5):
        refusals.put(f"jq_{n}", "no", now=0.0)
    assert [refusals.get(f"jq_{n}", now=1.0) for n in range(5)] == [None, None, "no", "no", "no"]


def test_failed_authentications_count_by_address_and_an_ipv6_host_by_its_64():
    from app.api.ratelimit import client_key

    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == (
        "2001:db8:1:2::/64")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key(None) == "unknown"


def test_a_token_holds_at_most_a_tenants_scopes():
    from app.api.auth import token_scopes

    assert token_scopes({"scope": "jobs:read metrics:read admin"}) == {"jobs:read"}
    assert token_scopes({"scopes": ["jobs:approve", "jobs:write", 7]}) == {"jobs:approve",
                                                                         "jobs:write"}
    assert token_scopes({"scope": "metrics:read"}) == frozenset()


def test_json_bodies_and_where_invalid_json_breaks():
    from app.api.bodies import is_json
    from app.api.errors import _where

    for fine in ("application/json", "application/json; charset=utf-8", "Application/JSON",
                 "application/problem+json"):
        assert is_json(fine), fine
    for wrong in (None, "", "text/plain", "application/x-www-form-urlencoded", "text/json",
                  "multipart/form-data; boundary=x"):
        assert not is_json(wrong), wrong
    assert _where('{"a": 1,\n  "b": }', 16) == "line 2, column 8"
    assert _where("[", 1) == "line 1, column 2"
