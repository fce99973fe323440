"""What the API shows to whom, over real HTTP: /metrics (every academy's numbers) to operator
keys only.
"""

from __future__ import annotations

import pytest

from app.api.keys import KeyRefused
from tests.api import ApiProcess, hs256_token, make_key
from tests.fixtures import make_tenant, sql


@pytest.fixture(scope="module")
def api(start_api) -> ApiProcess:
    return start_api({"JOBQ_API_RATE_LIMIT": "0"})


def test_metrics_are_for_operator_keys_only(api):
    mine, theirs = make_tenant(), make_tenant()
    made = api.client(make_key(theirs)).post(
        "/v1/jobs", json={"intent_key": "test.exec.approved_echo"})
    assert made.status_code == 201
    operator = api.client(make_key(None, scopes=("metrics:read",)))
    scraped = operator.get("/metrics")
    assert scraped.status_code == 200 and f'tenant="{theirs}"' in scraped.text

    # A tenant key cannot be given the scope any more...
    with pytest.raises(KeyRefused, match="metrics:read is for operator keys only"):
        make_key(mine, scopes=("jobs:read", "metrics:read"))
    # ...and one that has it from before is refused, as is a token claiming it (a token's
    # scopes are cut to a tenant's).
    old_key = make_key(mine, scopes=("jobs:read",))
    sql("UPDATE api_keys SET scopes = ARRAY['jobs:read', 'metrics:read'] "
        "WHERE tenant_id = CAST(:t AS uuid)", t=mine)
    refused = api.client(old_key).get("/metrics")
    assert refused.status_code == 403, refused.text
    assert "only an operator key" in refused.json()["error"] and theirs not in refused.text
    token = api.client(hs256_token(mine, scope="jobs:read metrics:read")).get("/metrics")
    assert token.status_code == 403 and theirs not in token.text
    assert api.client(old_key).get("/v1/jobs").status_code == 200  # its own jobs still
