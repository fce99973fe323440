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
