"""The API's doors over real sockets, against ``jobq api`` processes: request bodies (a size
limit checked before anything reads, parses or authenticates them; JSON only), one error shape
for every 4xx and 5xx (documented in the served OpenAPI document), query parameters that never
reach the database malformed, and the interactive docs served from the package (no internet).
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api import ApiProcess, make_key
from tests.fixtures import make_tenant, sql, wait_for

MIB = 1024 * 1024
#: The shape of every error answer: "error" always, "field" and "job_id" where they apply.
SHAPE = {"error", "field", "job_id"}


@pytest.fixture(scope="module")
def api(start_api) -> ApiProcess:
    return start_api({"JOBQ_API_RATE_LIMIT": "0"})


@pytest.fixture(scope="module")
def academy() -> str:
    return make_tenant()


@pytest.fixture(scope="module")
def key(academy) -> str:
    return make_key(academy, name="web")


def assert_problem(answer: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """``answer`` is an error of ``status`` in the API's one shape, naming ``words``."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    found = answer.json()
    assert isinstance(found, dict) and set(found) <= SHAPE and isinstance(found["error"], str)
    for word in words:
        assert word in found["error"], (word, found)
    return found


def jobs_of(tenant: str) -> int:
    return sql("SELECT count(*) FROM job_executions WHERE tenant_id = CAST(:t AS uuid)",
               t=tenant)[0][0]


# --- request bodies -----------------------------------------------------------------------------


def send_body(api: ApiProcess, total: int, *, chunked: bool, headers: tuple[str, ...] = ()
              ) -> tuple[int, dict[str, Any], int, float]:
    """POST ``total`` bytes of body to /v1/jobs a MiB at a time (the test never holds it whole),
    with Content-Length or chunked, and stop sending as soon as an answer arrives. Returns the
    status, the answer's JSON, the bytes sent and the seconds until the answer."""
    head = ["POST /v1/jobs HTTP/1.1", f"Host: 127.0.0.1:{api.port}",
            "Content-Type: application/json", *headers,
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"]
    piece = b"[" + b"0," * (MIB // 2 - 1) + b"0"
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    frames = total // MIB
    conn = socket.create_connection(("127.0.0.1", api.port))
    started = time.monotonic()
    try:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        conn.setblocking(False)
        sent, pending = 0, memoryview(b"")
        while True:
            more = bool(pending) or frames > 0
            readable, writable, _ = select.select([conn], [conn] if more else [], [], 15)
            if readable:
                break
            if not writable:
                raise AssertionError(f"no answer after {sent / MIB:.0f} MiB sent")
            if not pending:
                frames -= 1
                pending = memoryview(frame + (b"0\r\n\r\n" if chunked and not frames else b""))
            try:
                done = conn.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break  # closed after answering: the answer waits to be read
            pending = pending[done:]
            sent += done
        conn.setblocking(True)
        conn.settimeout(15)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            got = conn.recv(65536)
            if not got:
                break
            answer += got
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    status_line = answer.partition(b"\r\n")[0]
    body = answer.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body), sent, elapsed


def _length(answer: bytes) -> int:
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer)
    return int(found.group(1)) if found else 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_body_without_credentials_is_refused_413_before_it_is_read(api, chunked):
    send_body(api, 2 * MIB, chunked=chunked)  # the first such request may import and allocate
    before = api.rss_kib()
    status, problem, sent, elapsed = send_body(api, 200 * MIB, chunked=chunked)
    after = api.rss_kib()
    assert status == 413 and set(problem) <= SHAPE
    assert "262,144 bytes" in problem["error"], problem
    # The answer came long before the body could have been sent; the server held none of it.
    assert sent < 32 * MIB and elapsed < 5, (sent, elapsed)
    assert after - before < 4 * 1024, f"the API's RSS grew from {before} KiB to {after} KiB"


def test_a_10_mb_body_with_a_valid_key_is_refused_413_and_nothing_is_recorded(api):
    tenant = make_tenant()
    secret = make_key(tenant, name="tablet")
    status, problem, _, _ = send_body(api, 10 * MIB, chunked=False,
                                      headers=(f"Authorization: Bearer {secret}",))
    assert status == 413 and "262,144 bytes" in problem["error"] and "job_id" not in problem
    assert jobs_of(tenant) == 0
    # Refused before authentication: the key was not even looked up.
    assert sql("SELECT last_used_at FROM api_keys WHERE tenant_id = CAST(:t AS uuid)",
               t=tenant)[0][0] is None
    big = {"intent_key": "system.exec.echo", "intent_params": {"note": "x" * (10 * MIB)}}
    streamed = api.client(secret).post(
        "/v1/jobs", content=iter([httpx.Request("POST", "/", json=big).content]),
        headers={"Content-Type": "application/json"})
    assert_problem(streamed, 413, "262,144 bytes")
    assert jobs_of(tenant) == 0


def test_a_body_under_the_limit_with_parameters_over_theirs_is_refused_and_audited(api, key,
                                                                                   academy):
    answer = api.client(key).post("/v1/jobs", json={"intent_key": "system.exec.echo",
                                                    "intent_params": {"note": "x" * 100_000}})
    found = assert_problem(answer, 422, "65,536")
    assert found["field"] == "intent_params" and found["job_id"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_refused_415(api, key, academy, content_type):
    before = jobs_of(academy)
    headers = {"Content-Type": content_type} if content_type else {}
    client = api.client(key)
    client.headers.pop("Content-Type", None)
    answer = client.post("/v1/jobs", content=b'{"intent_key": "system.exec.echo"}',
                         headers=headers)
    assert_problem(answer, 415, "Content-Type must be application/json")
    assert jobs_of(academy) == before
    # A charset, or a +json type, is JSON too; a POST without a body needs no Content-Type.
    fine = client.post("/v1/jobs", content=b'{"intent_key": "system.exec.echo"}',
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert fine.status_code == 201, fine.text
    assert client.post(f"/v1/jobs/{fine.json()['id']}/cancel").status_code == 200


# --- one error shape ----------------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_in_the_error_shape(api, key):
    client = api.client(key)
    assert_problem(client.get("/v2/jobs"), 404, "/v2/jobs")
    assert_problem(httpx.get(api.url + "/nothing/here"), 404, "/nothing/here")
    wrong = client.delete("/v1/jobs")
    assert_problem(wrong, 405, "DELETE", "GET", "POST")
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_invalid_json_is_refused_400_saying_where(api, key, academy):
    before = jobs_of(academy)
    answer = api.client(key).post("/v1/jobs", content=b'{"intent_key": "system.exec.echo",\n'
                                                      b'  "intent_params": }',
                                  headers={"Content-Type": "application/json"})
    found = assert_problem(answer, 400, "not valid JSON", "line 2, column 20")
    assert found.get("field") is None
    not_utf8 = api.client(key).post("/v1/jobs", content=b'{"intent_key": "\xff\xfe"}',
                                    headers={"Content-Type": "application/json"})
    assert_problem(not_utf8, 400, "JSON")
    assert jobs_of(academy) == before


def test_validation_errors_name_fields_by_path(api, key):
    client = api.client(key)
    not_an_object = client.post("/v1/jobs", json=[1, 2])
    assert_problem(not_an_object, 422, "JSON object")
    missing = client.post("/v1/jobs", headers={"Content-Type": "application/json"})
    assert_problem(missing, 422, "body")
    flag = client.post("/v1/jobs", json={"intent_key": "system.exec.echo",
                                         "requires_approval": "yes"})
    assert assert_problem(flag, 422, "requires_approval")["field"] == "requires_approval"
    reason = client.post(f"/v1/jobs/{uuid.uuid4()}/cancel", json={"reason": ["x"]})
    assert assert_problem(reason, 422, "reason")["field"] == "reason"
    limit = client.get("/v1/jobs", params={"limit": "lots"})
    assert assert_problem(limit, 422, "limit")["field"] == "limit"


def test_an_internal_error_answers_500_in_the_shape_without_a_traceback(start_api):
    broken = start_api({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/jobq_no_such_db"})
    answer = broken.client("jq_" + "b" * 43).get("/v1/jobs")
    found = assert_problem(answer, 500, "internal error")
    assert "Traceback" not in answer.text and "jobq_no_such_db" not in found["error"]
    # The log has it (written once the answer has gone).
    wait_for(lambda: "Traceback" in broken.log(), 10, message="the traceback in the API's log")


def test_the_error_shape_is_documented_on_every_route(api):
    from openapi_spec_validator import validate

    document = httpx.get(api.url + "/openapi.json").json()
    validate(document)
    problem = "#/components/schemas/Problem"
    assert set(document["components"]["schemas"]["Problem"]["properties"]) == SHAPE
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            codes = operation["responses"]
            for code in ("401", "403", "422", "429", "500"):
                assert code in codes, (method, path, code)
            if method == "post":
                for code in ("400", "413", "415"):
                    assert code in codes, (method, path, code)
            for code, response in codes.items():
                if code[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": problem}, (method, path, code)


# --- query parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "name"), [
    ({"since": "99999999999d"}, "since"),
    ({"since": "9999999999999999999999999s"}, "since"),
    ({"since": "-1d"}, "since"),
    ({"since": "0s"}, "since"),
    ({"since": "1e400d"}, "since"),
    ({"since": "yesterday"}, "since"),
    ({"until": "yesterday"}, "until"),
    ({"until": "0s"}, "until"),
    ({"since": "1h", "until": "2h"}, "until"),
    ({"since": "2026-12-02T00:00:00+09:00", "until": "2026-12-01"}, "until"),
    ({"intent": "billing\x00.*"}, "intent"),
    ({"intent": "x" * 500}, "intent"),
    ({"status": "done"}, "status"),
    ({"cursor": "garbage"}, "cursor"),
    ({"limit": "99999999999999999999999"}, "limit"),
    ({"limit": "-1"}, "limit"),
])
def test_a_bad_query_parameter_answers_422_naming_it(api, key, query, name):
    found = assert_problem(api.client(key).get("/v1/jobs", params=query), 422, name)
    assert found["field"] == name


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(["since", "intent", "status", "cursor", "limit"]),
       value=st.one_of(st.text(max_size=40),
                       st.integers(min_value=-10**30, max_value=10**30).map(str),
                       st.from_regex(r"\A-?\d{1,25}(\.\d{0,5})?[smhdw]\Z")))
def test_no_query_parameter_value_answers_500(api, key, name, value):
    answer = api.client(key).get("/v1/jobs", params={name: value})
    assert answer.status_code in (200, 422), (name, value, answer.status_code, answer.text)
    if answer.status_code == 422:
        assert answer.json()["field"] == name


# --- the docs, without internet -------------------------------------------------------------------

_REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_assets_the_api_serves_itself(api, page):
    html = httpx.get(api.url + page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "cdn." not in html.text and "fonts.googleapis" not in html.text
    references = [a or b for a, b in _REFERENCE.findall(html.text)]
    assert references, html.text
    kinds = {}
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        asset = httpx.get(api.url + reference)
        assert asset.status_code == 200, reference
        kinds[reference.rsplit(".", 1)[-1]] = asset.headers["content-type"]
        if reference.endswith((".js", ".css")):
            assert len(asset.content) > 50_000, reference
    expected = {"js": "text/javascript", "css": "text/css", "png": "image/png",
                "json": "application/json"}
    for suffix, content_type in kinds.items():
        assert content_type.split(";")[0] == expected[suffix], (suffix, content_type)
    assert "js" in kinds
