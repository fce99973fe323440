"""The web console (/ui) over real HTTP on a real ``jobq api``, an in-thread worker running the
jobs: who sees what (an operator every academy, an academy's key its own only, another's job
404), the actions through the API's own code, refused cross-site posts and ended sessions, and
why a waiting job waits, as the console, the API and `jobq job` say it."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid

import httpx
import pytest

from tests.api import ApiProcess, hs256_token, make_key
from tests.commands import jobq
from tests.console import ConsoleSession, job_ids, submit, waiting_codes
from tests.fixtures import event_kinds, job_row, make_tenant, sql, wait_for_status

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def api(start_api) -> ApiProcess:
    return start_api({"JOBQ_API_RATE_LIMIT": "0"})


@pytest.fixture(scope="module")
def academies() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {name: make_tenant(f"{name} {tag}") for name in ("해오름 학원", "바다 학원")}


@pytest.fixture(scope="module")
def keys(academies) -> dict[str, str]:
    return {name: make_key(tenant) for name, tenant in academies.items()}


@pytest.fixture(scope="module")
def operator(api) -> ConsoleSession:
    return ConsoleSession(api, make_key(None, scopes=("jobs:read", "jobs:write",
                                                      "jobs:approve")))


def names(academies: dict[str, str]) -> tuple[str, str]:
    first, second = sorted(academies)
    return first, second


def test_an_operator_filters_by_academy_and_opens_a_timeline(api, academies, keys, operator):
    first, second = names(academies)
    mine = submit(api, keys[first], {"intent_key": "system.exec.echo",
                                     "intent_params": {"word": "안녕"}}).json()["id"]
    theirs = submit(api, keys[second], {"intent_key": "system.exec.echo",
                                        "intent_params": {}}).json()["id"]
    wait_for_status(mine, "completed")
    academy_name = sql("SELECT name FROM tenants WHERE id = :id", id=academies[first])[0][0]
    listed = job_ids(operator.page("/ui/jobs", academy=academy_name))
    assert mine in listed and theirs not in listed
    everything = job_ids(operator.page("/ui/jobs"))
    assert everything.index(theirs) < everything.index(mine)  # newest first
    shown = operator.page(f"/ui/jobs/{mine}")
    assert "Timeline" in shown and "안녕" in shown
    for kind in ("created", "started", "completed"):
        assert f'<span class="ev">{kind}</span>' in shown
    by_key = job_ids(operator.page("/ui/jobs", q=mine[:8]))
    assert by_key == [mine]


def test_the_jobs_page_filters_by_a_time_window_its_end_too(api, operator):
    academy = f"시간 학원 {uuid.uuid4().hex[:6]}"
    tenant = make_tenant(academy)
    older, newer = (submit(api, make_key(tenant), {"intent_key": "system.exec.echo"}).json()["id"]
                    for _ in range(2))
    sql("UPDATE job_executions SET created_at = now() - interval '3 hours' WHERE id = :id",
        id=older)

    def listed(**window: str) -> list[str]:
        return job_ids(operator.page("/ui/jobs", academy=academy, **window))

    assert listed() == [newer, older]
    assert listed(until="1h") == [older]
    assert listed(since="1h") == [newer]
    assert listed(since="4h", until="2h") == [older]
    assert listed(until=(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()) == [older]
    shown = operator.page("/ui/jobs", academy=academy, until="1h")
    assert 'name="until" value="1h"' in shown  # the form keeps it, and the live updates too
    live = re.search(r'data-live="([^"]+)"', shown).group(1).replace("&amp;", "&")
    assert "until=1h" in live and job_ids(operator.http.get(live).text) == [older]
    refused = operator.page("/ui/jobs", academy=academy, since="1h", until="2h")
    assert job_ids(refused) == [] and "until=&#x27;2h&#x27; is not after since=&#x27;1h&#x27;" in refused


def test_a_refused_job_is_retried_on_corrected_parameters_and_shows_before_and_after(
        api, academies, keys, operator):
    first, _ = names(academies)
    refused = submit(api, keys[first], {"intent_key": "system.exec.sleep",
                                        "intent_params": {"seconds": -5}})
    assert refused.status_code == 422
    job_id = refused.json()["job_id"]
    answer = operator.post(f"/ui/jobs/{job_id}/retry",
                           {"corrected": "1", "params": json.dumps({"seconds": 0})})
    assert answer.status_code == 303, answer.text[:2000]
    assert wait_for_status(job_id, "completed")["intent_params"] == {"seconds": 0}
    shown = operator.page(f"/ui/jobs/{job_id}")
    assert "Corrected parameters" in shown
    assert re.search(r'<tr class="changed"><th>seconds</th><td>-5</td><td>0(\.0)?</td></tr>',
                     shown)
    requeued = [e for e in sql("SELECT detail FROM job_events WHERE job_id = :id AND "
                               "kind = 'requeued'", id=job_id)]
    assert requeued[0][0]["by"].startswith("api:key-")


def test_bad_corrected_parameters_are_refused_naming_the_field(api, academies, keys, operator):
    first, _ = names(academies)
    job_id = submit(api, keys[first], {"intent_key": "system.exec.sleep",
                                       "intent_params": {"seconds": "x"}}).json()["job_id"]
    answer = operator.post(f"/ui/jobs/{job_id}/retry",
                           {"corrected": "1", "params": '{"seconds": 99999}'})
    assert answer.status_code == 422
    assert "seconds" in answer.text and job_row(job_id)["status"] == "failed"


def test_approve_reject_and_cancel_go_through_the_same_code_as_the_api(
        api, academies, keys, operator):
    first, _ = names(academies)
    asked = [submit(api, keys[first], {"intent_key": "system.exec.echo", "intent_params": {},
                                       "requires_approval": True}).json()["id"]
             for _ in range(3)]
    approvals = operator.page("/ui/approvals")
    assert all(job_id in approvals for job_id in asked)
    assert operator.post(f"/ui/jobs/{asked[0]}/approve", {"note": "확인했습니다"},
                         page="/ui/approvals").status_code == 303
    wait_for_status(asked[0], "completed")
    assert operator.post(f"/ui/jobs/{asked[1]}/reject", {"note": "중복"}).status_code == 303
    assert operator.post(f"/ui/jobs/{asked[2]}/cancel", {"reason": "not needed"}
                         ).status_code == 303
    assert job_row(asked[1])["status"] == "cancelled"
    assert job_row(asked[2])["status"] == "cancelled"
    approved = sql("SELECT detail FROM job_events WHERE job_id = :id AND kind = 'approved'",
                   id=asked[0])[0][0]
    assert approved["note"] == "확인했습니다" and approved["by"].startswith("api:")
    shown = operator.page(f"/ui/jobs/{asked[0]}")
    assert "확인했습니다" in shown
    again = operator.post(f"/ui/jobs/{asked[0]}/approve", {"note": ""})
    assert again.status_code == 409 and "not awaiting_approval" in again.text


def test_an_academy_sees_only_its_own_jobs_and_another_academys_job_is_not_found(
        api, academies, keys):
    first, second = names(academies)
    theirs = submit(api, keys[second], {"intent_key": "system.exec.echo",
                                        "intent_params": {}}).json()["id"]
    mine = submit(api, keys[first], {"intent_key": "system.exec.echo",
                                     "intent_params": {}}).json()["id"]
    academy = ConsoleSession(api, keys[first])
    listed = job_ids(academy.page("/ui/jobs"))
    assert mine in listed and theirs not in listed
    other_name = sql("SELECT name FROM tenants WHERE id = :id", id=academies[second])[0][0]
    assert theirs not in job_ids(academy.page("/ui/jobs", academy=other_name))
    assert theirs not in job_ids(academy.page("/ui/jobs", q=theirs))
    assert academy.get(f"/ui/jobs/{theirs}").status_code == 404
    refused = academy.http.post(f"/ui/jobs/{theirs}/cancel",
                                data={"csrf": academy.token("/ui/jobs")},
                                headers={"Origin": api.url})
    assert refused.status_code == 404 and job_row(theirs)["status"] != "cancelled"
    assert "academy" not in academy.page("/ui/jobs").split("<thead>")[1].split("</thead>")[0]


def test_cross_site_posts_forged_cookies_and_revoked_keys_are_refused(api, academies, keys):
    first, _ = names(academies)
    key_name = f"console-{uuid.uuid4().hex[:6]}"
    key = make_key(academies[first], name=key_name)
    session = ConsoleSession(api, key)
    job_id = submit(api, keys[first], {"intent_key": "system.exec.echo", "intent_params": {},
                                       "requires_approval": True}).json()["id"]
    token = session.token(f"/ui/jobs/{job_id}")
    path = f"/ui/jobs/{job_id}/cancel"
    elsewhere = session.http.post(path, data={"csrf": token},
                                  headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403 and "cross-site" in elsewhere.text
    no_origin = session.http.post(path, data={"csrf": token})
    assert no_origin.status_code == 403
    wrong_token = session.http.post(path, data={"csrf": "x" + token},
                                    headers={"Origin": api.url})
    assert wrong_token.status_code == 403
    assert job_row(job_id)["status"] == "awaiting_approval"
    cookie = session.http.cookies["jobq_console"]
    body, _, signature = cookie.rpartition(".")
    with httpx.Client(base_url=api.url, cookies={"jobq_console": f"{body[:-2]}AA.{signature}"},
                      timeout=20) as stranger:
        forged = stranger.get("/ui/jobs", follow_redirects=False)
    assert forged.status_code == 303 and forged.headers["location"].startswith("/ui/login")
    assert jobq("keys", "revoke", key_name, "--tenant", academies[first]).returncode == 0
    ended = session.get("/ui/jobs")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/ui/login")
    bad = session.http.post("/ui/login", data={"credential": "jq_nope"},
                            headers={"Origin": api.url})
    assert bad.status_code == 401 and "unknown or revoked API key" in bad.text


def test_a_waiting_job_says_why_in_the_console_the_api_and_the_cli(api, academies, keys,
                                                                     operator):
    first, _ = names(academies)
    later = submit(api, keys[first], {"intent_key": "system.exec.echo", "intent_params": {},
                                      "run_at": "2099-01-01T09:00:00+09:00"}).json()["id"]
    assert "run_at_future" in waiting_codes(operator.page(f"/ui/jobs/{later}"))
    with api.client(keys[first]) as client:
        waiting = client.get(f"/v1/jobs/{later}").json()["waiting"]
    assert [w["code"] for w in waiting][:1] == ["run_at_future"]
    assert "2099-01-01" in waiting[0]["text"]
    shown = jobq("job", later)
    assert "waiting: it is due at 2099-01-01" in " ".join(shown.stdout.split())
    asked = submit(api, keys[first], {"intent_key": "system.exec.echo", "intent_params": {},
                                      "requires_approval": True}).json()["id"]
    assert waiting_codes(operator.page(f"/ui/jobs/{asked}")) == ["awaiting_approval"]
    done = submit(api, keys[first], {"intent_key": "system.exec.echo",
                                     "intent_params": {}}).json()["id"]
    wait_for_status(done, "completed")
    assert event_kinds(done) and waiting_codes(operator.page(f"/ui/jobs/{done}")) == []


def test_a_suspended_academys_job_says_it_is_held(api, operator):
    held_academy = make_tenant()
    key = make_key(held_academy)
    job_id = submit(api, key, {"intent_key": "system.exec.echo", "intent_params": {},
                               "run_at": "2099-01-01T09:00:00+09:00"}).json()["id"]
    sql("UPDATE tenants SET status = 'suspended' WHERE id = :id", id=held_academy)
    codes = waiting_codes(operator.page(f"/ui/jobs/{job_id}"))
    assert codes[:2] == ["academy_suspended", "run_at_future"]


def test_an_operator_suspends_resumes_and_limits_an_academy_audited_by_name(api, operator):
    academy = make_tenant()
    name = sql("SELECT name FROM tenants WHERE id = :id", id=academy)[0][0]
    listed = operator.page("/ui/academies")
    assert f'data-academy="{academy}"' in listed and name in listed
    page = "/ui/academies"
    assert operator.post(f"/ui/academies/{academy}/suspend", {}, page=page).status_code == 303
    assert sql("SELECT status FROM tenants WHERE id = :id", id=academy)[0][0] == "suspended"
    answer = operator.post(f"/ui/academies/{academy}/limits",
                           {"weight": "2", "max_running": "3"}, page=page)
    assert answer.status_code == 303
    assert operator.post(f"/ui/academies/{academy}/resume", {}, page=page).status_code == 303
    assert sql("SELECT status, weight, max_running FROM tenants WHERE id = :id",
               id=academy)[0] == ("active", 2.0, 3)
    audit = sql("SELECT kind, by FROM tenant_events WHERE tenant_id = :id ORDER BY at, id",
                id=academy)
    assert [k for k, _ in audit][:1] == ["suspended"] and "resumed" in [k for k, _ in audit]
    assert all(by.startswith("api:key-") for _, by in audit)
    bad = operator.post(f"/ui/academies/{academy}/limits", {"weight": "-1"}, page=page)
    assert bad.status_code == 422 and "weight must be a number above 0" in bad.text


def test_the_queues_page_shows_each_queue_and_the_share_of_each_ready_academy(
        api, academies, keys, operator):
    shown = operator.page("/ui/queues")
    for queue in ("dispatch", "realtime", "bulk", "maintenance"):
        assert f'data-queue="{queue}"' in shown
    assert "academies with work ready" in shown


def test_the_channels_page_shows_each_channels_use_and_each_academys_share(
        api, academies, operator):
    from app.intake.actions import set_channel_limits
    from app.run.quota import Channel

    first, second = names(academies)
    channel = f"kakaotest{uuid.uuid4().hex[:6]}"
    set_channel_limits(academies[first], channel, rate=10, daily=500, by="test")
    # Two academies sending on a 50/s channel, the first capped at 10/s by its own plan: two
    # seconds of grants (a second's counts join the channel's history when the next begins).
    with Channel(channel, academies[first], 50) as one, \
            Channel(channel, academies[second], 50) as two:
        for waiting in (40, 30):
            one.take(5, backlog=waiting)
            two.take(5, backlog=waiting)
            time.sleep(1.0 - time.time() % 1.0 + 0.05)
        one.take(1, backlog=30)  # still sending while the page is read
        two.take(1, backlog=30)
        shown = operator.page("/ui/channels")
        fragment = operator.page("/ui/channels", fragment=1)

    section = re.search(rf'<section class="channel" data-channel="{channel}">(.*?)</section>',
                        shown, re.S)
    assert section, shown[-3000:]
    body = section.group(1)
    assert "<th>provider's rate</th><td>50/s</td>" in body
    rows = dict(re.findall(r'<tr data-academy="([0-9a-f-]{36})">(.*?)</tr>', body, re.S))
    assert set(rows) == set(academies.values()), body
    mine, theirs = (re.findall(r"<td>(.*?)</td>", rows[academies[n]]) for n in (first, second))
    # academy, weight, share/s, cap/s, sent/s, messages waiting, daily used / quota, jobs
    assert first in mine[0] and second in theirs[0]
    assert (mine[2], mine[3], mine[5]) == ("10", "10", "30")  # capped: its share is its cap
    assert (theirs[2], theirs[3], theirs[5]) == ("40", "-", "30")  # the rest of the 50
    assert mine[6] == "11 / 500" and theirs[6] == "11"
    assert f'data-channel="{channel}"' in fragment and "<html" not in fragment
    assert 'href="/ui/channels"' in shown  # in the operator's navigation


def test_an_academys_session_does_not_see_academies_or_queues(api, academies, keys):
    first, _ = names(academies)
    academy = ConsoleSession(api, keys[first])
    assert academy.get("/ui/academies").status_code == 403
    assert academy.get("/ui/queues").status_code == 403
    assert academy.get("/ui/channels").status_code == 403
    assert "/ui/academies" not in academy.page("/ui/jobs")


def test_a_session_made_from_a_token_ends_when_the_token_expires(api, academies):
    first, _ = names(academies)
    token = hs256_token(academies[first], sub="teacher-7", expires_in=4)
    session = ConsoleSession(api, token)
    assert "jwt:teacher-7" in session.page("/ui/jobs")
    time.sleep(5)
    ended = session.get("/ui/jobs")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/ui/login")


def test_a_login_posted_from_another_site_is_refused(api, keys):
    first = sorted(keys)[0]
    with httpx.Client(base_url=api.url, timeout=20) as stranger:
        answer = stranger.post("/ui/login", data={"credential": keys[first]},
                               headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403 and "jobq_console" not in answer.cookies
