"""Who may call, against ``jobq api`` processes over real sockets: failed authentication is
throttled per client address before any credential is looked up, a flood of one bad key costs
the database nothing after its first refusal, and JWTs are held to their audience, issuer and
expiry (with a little clock leeway) and to the scopes a tenant may have.
"""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from tests.api import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, ApiProcess, hs256_token, make_key
from tests.commands import jobq
from tests.fixtures import make_tenant, sql, wait_for


def _source() -> str:
    """A loopback address no other test connects from: a client of its own to the API."""
    return f"127.{uuid.uuid4().int % 200 + 20}.{uuid.uuid4().int % 250 + 1}.{uuid.uuid4().int % 250 + 1}"


@pytest.fixture(scope="module")
def academy() -> str:
    return make_tenant()


# --- failed authentication ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(start_api) -> ApiProcess:
    # A window of an hour: a test's few seconds fall into one (the count starts anew with each).
    return start_api({"JOBQ_API_AUTH_FAILURES": "5", "JOBQ_API_AUTH_FAILURE_WINDOW": "3600",
                      "JOBQ_API_RATE_LIMIT": "0"})


def last_used(tenant: str, name: str):
    return sql("SELECT last_used_at FROM api_keys WHERE tenant_id = CAST(:t AS uuid) "
               "AND name = :n", t=tenant, n=name)[0][0]


def test_failed_authentication_is_limited_per_client_before_any_lookup(guarded, academy):
    attacker, neighbour = _source(), _source()
    bad = guarded.client("jq_" + "z" * 43, source=attacker)
    for _ in range(5):
        answer = bad.get("/v1/jobs")
        assert answer.status_code == 401 and "unknown or revoked" in answer.json()["error"]
    forged = guarded.client(hs256_token(academy, secret="another-secret-" + "0" * 32),
                            source=attacker)
    refused = forged.get("/v1/jobs")
    assert refused.status_code == 429, refused.text
    assert set(refused.json()) == {"error"} and "failed authentications" in refused.json()["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    # Even a good key is not looked up from that address until its window ends...
    good = make_key(academy, name="desk")
    assert guarded.client(good, source=attacker).get("/v1/jobs").status_code == 429
    assert last_used(academy, "desk") is None
    # ... while another client, with the same key or a bad one of its own, is served as usual.
    assert guarded.client(good, source=neighbour).get("/v1/jobs").status_code == 200
    assert last_used(academy, "desk") is not None
    assert guarded.client("jq_" + "y" * 43, source=neighbour).get("/v1/jobs").status_code == 401


def test_clients_racing_from_one_address_get_no_more_refusals_than_the_limit(guarded):
    from concurrent.futures import ThreadPoolExecutor

    address = _source()

    def three(n: int) -> list[int]:
        with guarded.client(f"jq_{n:02d}" + "r" * 41, source=address) as client:
            return [client.get("/v1/jobs").status_code for _ in range(3)]

    with ThreadPoolExecutor(10) as pool:
        statuses = [s for batch in pool.map(three, range(10)) for s in batch]
    assert sorted(set(statuses)) == [401, 429] and statuses.count(401) == 5, statuses


def test_asking_without_credentials_or_lacking_a_scope_is_no_failed_authentication(
        guarded, academy):
    client = _source()
    reader = make_key(academy, scopes=("jobs:read",))
    for _ in range(8):
        assert guarded.client(source=client).get("/v1/jobs").status_code == 401
        assert guarded.client(reader, source=client).post(
            "/v1/jobs", json={"intent_key": "system.exec.echo"}).status_code == 403
    assert guarded.client(reader, source=client).get("/v1/jobs").status_code == 200


def _transactions() -> int:
    """Transactions committed or rolled back in this run's database so far, once the
    statistics have caught up (two readings a second apart agree)."""
    def settled():
        first = sql("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()")[0][0]
        time.sleep(1.1)
        second = sql("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                     "WHERE datname = current_database()")[0][0]
        return second if second - first <= 2 else None  # its own two readings

    return wait_for(settled, 30, interval=0, message="database statistics to settle")


def test_a_flood_of_one_bad_key_costs_one_lookup(start_api):
    api = start_api({"JOBQ_API_AUTH_FAILURES": "0", "JOBQ_API_RATE_LIMIT": "0"})
    client = api.client("jq_" + "f" * 43, source=_source())
    assert client.get("/v1/jobs").status_code == 401  # the one lookup
    before = _transactions()
    for _ in range(500):
        answer = client.get("/v1/jobs")
        assert answer.status_code == 401 and "unknown or revoked" in answer.json()["error"]
    # One transaction each before; what is left is other connections' statistics arriving late.
    cost = _transactions() - before
    assert cost < 30, f"500 refusals of a known bad key cost {cost} database transactions"


# --- JWTs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens_api(start_api, jwks) -> ApiProcess:
    return start_api({"JOBQ_JWT_JWKS_URL": jwks.url, "JOBQ_API_AUTH_FAILURES": "0",
                      "JOBQ_API_RATE_LIMIT": "0"})


def status_with(api: ApiProcess, token: str, path: str = "/v1/jobs") -> tuple[int, str]:
    answer = api.client(token).get(path)
    return answer.status_code, answer.json().get("error", "") if answer.status_code != 200 else ""


def test_a_token_for_another_audience_or_issuer_is_refused(tokens_api, jwks, academy):
    assert status_with(tokens_api, hs256_token(academy))[0] == 200
    for claims, word in (({"aud": "another-app"}, "audience"), ({"aud": None}, "aud"),
                         ({"iss": "https://id.elsewhere.test/"}, "issuer"),
                         ({"iss": None}, "iss")):
        status, error = status_with(tokens_api, hs256_token(academy, **claims))
        assert status == 401 and word in error, (claims, status, error)
    other_app = jwks.token(sub="u-1", exp=int(time.time()) + 60, aud="another-app",
                           app_metadata={"tenant_id": academy})
    assert status_with(tokens_api, other_app)[0] == 401
    ours = jwks.token(sub="u-1", exp=int(time.time()) + 60, app_metadata={"tenant_id": academy})
    assert status_with(tokens_api, ours)[0] == 200


def test_a_token_expired_within_the_leeway_is_accepted_and_beyond_it_refused(tokens_api,
                                                                             academy):
    assert status_with(tokens_api, hs256_token(academy, expires_in=-10))[0] == 200
    status, error = status_with(tokens_api, hs256_token(academy, expires_in=-60))
    assert status == 401 and "expired" in error
    early = hs256_token(academy, nbf=int(time.time()) + 10)
    assert status_with(tokens_api, early)[0] == 200
    too_early = hs256_token(academy, nbf=int(time.time()) + 120)
    assert status_with(tokens_api, too_early)[0] == 401


def test_a_token_holds_only_the_scopes_a_tenant_may_have(tokens_api, academy):
    greedy = hs256_token(academy, scope="jobs:read metrics:read admin:all")
    assert status_with(tokens_api, greedy)[0] == 200
    status, error = status_with(tokens_api, greedy, "/metrics")
    assert status == 403 and "metrics:read" in error
    only_unknown = hs256_token(academy, scope="metrics:read superuser")
    assert status_with(tokens_api, only_unknown)[0] == 403
    as_list = hs256_token(academy, scopes=["jobs:write", "jobs:approve", "root"])
    answer = tokens_api.client(as_list).post("/v1/jobs", json={"intent_key": "system.exec.echo"})
    assert answer.status_code == 201, answer.text


def test_jwts_without_an_audience_or_issuer_do_not_start(tmp_path):
    env = {"JOBQ_JWT_SECRET": JWT_SECRET, "JOBQ_JWT_AUDIENCE": "", "JOBQ_JWT_ISSUER": JWT_ISSUER}
    refused = jobq("api", "--port", "9", env=env, timeout=60)
    assert refused.returncode == 2
    assert "JOBQ_JWT_AUDIENCE" in refused.stderr and "JOBQ_JWT_SECRET" in refused.stderr
    neither = jobq("api", "--port", "9", env={"JOBQ_JWT_JWKS_URL": "https://id.test/jwks.json",
                                              "JOBQ_JWT_AUDIENCE": "", "JOBQ_JWT_ISSUER": ""},
                   timeout=60)
    assert neither.returncode == 2
    assert "JOBQ_JWT_AUDIENCE and JOBQ_JWT_ISSUER are not set" in " ".join(neither.stderr.split())
    scopes = jobq("api", "--port", "9", env={"JOBQ_JWT_SECRET": JWT_SECRET,
                                             "JOBQ_JWT_AUDIENCE": JWT_AUDIENCE,
                                             "JOBQ_JWT_ISSUER": JWT_ISSUER,
                                             "JOBQ_JWT_DEFAULT_SCOPES": "jobs:read,metrics:read"},
                  timeout=60)
    assert scopes.returncode == 2 and "metrics:read" in scopes.stderr


def test_a_token_signed_with_none_or_for_another_algorithm_is_refused(tokens_api, academy):
    claims = {"sub": "u", "exp": int(time.time()) + 60, "aud": JWT_AUDIENCE, "iss": JWT_ISSUER,
              "app_metadata": {"tenant_id": academy}}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert status_with(tokens_api, unsigned)[0] == 401
