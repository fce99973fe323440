"""Helpers for the web console's tests: a logged-in HTTP session on a real ``jobq api``, and
jobs made the ways people make them (over the API, refused, awaiting approval)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.api import ApiProcess


class ConsoleSession:
    """An HTTP client that logged in to /ui with a credential and posts forms as its pages do
    (same-site, with the page's token)."""

    def __init__(self, api: ApiProcess, credential: str) -> None:
        self.api = api
        self.http = httpx.Client(base_url=api.url, timeout=20, follow_redirects=False)
        answer = self.http.post("/ui/login", data={"credential": credential, "next": "/ui/jobs"},
                                headers={"Origin": api.url})
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/ui/jobs"

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def page(self, path: str, **params: Any) -> str:
        answer = self.get(path, **params)
        assert answer.status_code == 200, (answer.status_code, answer.text[:2000])
        return answer.text

    def token(self, path: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.page(path))
        assert found, f"no form token on {path}"
        return found.group(1)

    def post(self, path: str, fields: dict[str, str], *, page: str | None = None,
             origin: str | None = None) -> httpx.Response:
        """Post a form of ``page`` (default: the job page the action belongs to)."""
        page = page or path.rsplit("/", 1)[0]
        data = {"csrf": self.token(page), **fields}
        return self.http.post(path, data=data, headers={"Origin": origin or self.api.url,
                                                        "Referer": self.api.url + page})


def job_ids(html: str) -> list[str]:
    """The jobs a list page shows, in order."""
    return re.findall(r'<tr data-job="([0-9a-f-]{36})"', html)


def waiting_codes(html: str) -> list[str]:
    return re.findall(r'<li data-code="([a-z_]+)"', html)


def submit(api: ApiProcess, key: str, body: dict[str, Any]) -> httpx.Response:
    with api.client(key) as client:
        return client.post("/v1/jobs", json=body)
