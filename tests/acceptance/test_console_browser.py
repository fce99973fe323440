"""The web console in a real browser: the distribution's headless Chromium driven through its
chromedriver (selenium) over a real ``jobq api`` on a real socket, an in-thread worker running
the jobs. An operator logs in, filters by academy, opens a timeline, retries a refused job on
corrected parameters, approves one and cancels one; an academy's key sees none of another's
jobs, whose URL answers not found; the page loads nothing from anywhere but the API, and in a
network namespace with no internet (tests/offline.py) it works all the same.

Where no Chromium is installed these tests skip, saying so; under CI (CI=true) they fail
instead, since .ci/run installs it. JOBQ_SCREENSHOTS=docs writes the screenshots the docs
show (docs/console-*.png); otherwise they go to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api import ApiProcess, make_key
from tests.console import submit
from tests.fixtures import ROOT, job_row, make_tenant, sql, wait_for_status

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MISSING = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]

if MISSING:
    why = (f"no {' and no '.join(MISSING)}: the console's browser tests need the distribution's "
           "Chromium (apt-get install chromium chromium-driver; .ci/run installs it)")
    if os.environ.get("CI") == "true":
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ready  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.slow]


def chrome_options(width: int = 1280, height: int = 900) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--disable-extensions", "--lang=en-US",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return options


def browser(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=chrome_options(width, height), service=service)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def api(start_api) -> ApiProcess:
    return start_api({"JOBQ_API_RATE_LIMIT": "0"})


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return ROOT / "docs" if os.environ.get("JOBQ_SCREENSHOTS") == "docs" \
        else tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    driver = browser()
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver: webdriver.Chrome, api: ApiProcess, credential: str) -> None:
    driver.get(api.url + "/ui/jobs")
    field = WebDriverWait(driver, 10).until(ready.presence_of_element_located(
        (By.NAME, "credential")))
    field.send_keys(credential)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(driver, 10).until(ready.presence_of_element_located((By.CSS_SELECTOR,
                                                                       "form.filters")))


def shown_jobs(driver: webdriver.Chrome) -> list[str]:
    # Read in one go: the list's live part is replaced every few seconds.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('table.jobs tr[data-job]'))"
        ".map(function (r) { return r.getAttribute('data-job'); })")


def click(driver: webdriver.Chrome, css: str) -> None:
    """Click what ``css`` finds, found again should the live part replace it meanwhile."""
    def clicked(d: webdriver.Chrome) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,
                                                  NoSuchElementException)).until(clicked)


def wait_text(driver: webdriver.Chrome, text: str, timeout: float = 20) -> None:
    """Wait until the page says ``text`` (read afresh each time: the page may reload itself
    as the job it shows ends)."""
    def says(d: webdriver.Chrome) -> bool:
        return text in (d.execute_script(
            "var m = document.querySelector('main'); return m ? m.innerText : '';") or "")

    WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(says)


def test_an_operator_filters_opens_a_timeline_retries_approves_and_cancels(api, chrome, shots):
    tag = uuid.uuid4().hex[:6]
    ours, theirs = make_tenant(f"햇살 학원 {tag}"), make_tenant(f"별빛 학원 {tag}")
    our_key, their_key = make_key(ours), make_key(theirs)
    done = submit(api, our_key, {"intent_key": "system.exec.echo",
                                 "intent_params": {"student": "김하늘", "notice": "지각"}}).json()
    other = submit(api, their_key, {"intent_key": "system.exec.echo",
                                    "intent_params": {}}).json()
    refused = submit(api, our_key, {"intent_key": "system.exec.sleep",
                                    "intent_params": {"seconds": -1}}).json()["job_id"]
    asked = [submit(api, our_key, {"intent_key": "system.exec.echo", "intent_params": {"n": n},
                                   "requires_approval": True}).json()["id"] for n in (1, 2)]
    wait_for_status(done["id"], "completed")
    operator = make_key(None, name=f"ops-{tag}")
    log_in(chrome, api, operator)

    # Filter by academy, the name typed as a person would.
    chrome.find_element(By.NAME, "academy").send_keys(f"햇살 학원 {tag}")
    chrome.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(chrome, 10).until(lambda d: "academy=" in d.current_url)
    listed = shown_jobs(chrome)
    assert done["id"] in listed and refused in listed and other["id"] not in listed
    chrome.save_screenshot(str(shots / "console-jobs.png"))

    # The timeline of a finished job.
    click(chrome, f'tr[data-job="{done["id"]}"] a.id')
    wait_text(chrome, "Timeline")
    events = chrome.execute_script(
        "return Array.from(document.querySelectorAll('table.timeline .ev'))"
        ".map(function (e) { return e.textContent; })")
    assert events == ["created", "started", "completed"]

    # A refused job, retried on corrected parameters; the page follows it to its end.
    chrome.get(f"{api.url}/ui/jobs/{refused}")
    box = chrome.find_element(By.NAME, "params")
    box.clear()
    box.send_keys(json.dumps({"seconds": 0.2}))
    chrome.find_element(By.CSS_SELECTOR, 'button[name="corrected"]').click()
    wait_text(chrome, "Retried on the corrected parameters")
    wait_for_status(refused, "completed")
    wait_text(chrome, "completed")
    chrome.get(f"{api.url}/ui/jobs/{refused}")
    changed = chrome.find_element(By.CSS_SELECTOR, "table.diff tr.changed").text
    assert changed.split() == ["seconds", "-1", "0.2"]
    chrome.set_window_size(1280, 1500)  # the before and after, and the timeline below it
    chrome.save_screenshot(str(shots / "console-job.png"))
    chrome.set_window_size(1280, 900)

    # Approve one from the Approvals page, with a note; cancel the other from its page.
    chrome.get(f"{api.url}/ui/approvals")
    item = chrome.find_element(By.CSS_SELECTOR, f'li[data-job="{asked[0]}"]')
    item.find_element(By.NAME, "note").send_keys("원장 확인")
    item.find_element(By.CSS_SELECTOR, "button.approve").click()
    wait_text(chrome, "Approved")
    assert wait_for_status(asked[0], "completed")["status"] == "completed"
    chrome.get(f"{api.url}/ui/jobs/{asked[1]}")
    chrome.find_element(By.CSS_SELECTOR, "button.cancel").click()
    wait_text(chrome, "Cancelled (was awaiting_approval)")
    assert job_row(asked[1])["status"] == "cancelled"
    approved = sql("SELECT detail FROM job_events WHERE job_id = :id AND kind = 'approved'",
                   id=asked[0])[0][0]
    assert approved == {"by": f"api:ops-{tag}", "note": "원장 확인"}

    # Nothing came from anywhere but the API (no CDN): the page works offline.
    loaded = chrome.execute_script(
        "return performance.getEntriesByType('resource').map(function (r) { return r.name; })")
    assert loaded and all(name.startswith(api.url) for name in loaded)


def test_an_operator_watches_two_academies_share_a_channel_on_the_channels_page(
        api, chrome, shots):
    import threading
    import time

    from app.intake.actions import set_channel_limits
    from app.run.quota import Channel

    tag = uuid.uuid4().hex[:6]
    big, small = make_tenant(f"큰 학원 {tag}"), make_tenant(f"작은 학원 {tag}")
    channel = f"kakao{tag}"
    set_channel_limits(small, channel, rate=10, daily=5000, by="test")
    stop = threading.Event()

    def send(tenant: str, backlog: int) -> None:
        """A sender taking a few messages every 0.2 s, its backlog going down as it does."""
        with Channel(channel, tenant, 50) as sender:
            while not stop.is_set() and backlog > 0:
                backlog -= sender.take(min(5, backlog), backlog=backlog).count
                time.sleep(0.2)

    senders = [threading.Thread(target=send, args=(t, n), daemon=True)
               for t, n in ((big, 10_000), (small, 400))]
    for thread in senders:
        thread.start()
    try:
        log_in(chrome, api, make_key(None))
        click(chrome, 'nav a[href="/ui/channels"]')
        wait_text(chrome, f"큰 학원 {tag}")
        section = f'section[data-channel="{channel}"]'

        def waiting(tenant: str) -> int:
            return int(chrome.execute_script(
                "var r = document.querySelector(arguments[0] + ' tr[data-academy=\"' + "
                "arguments[1] + '\"]'); return r ? r.cells[5].textContent.replace(/,/g, '') "
                ": '-1';", section, tenant))

        # The share of each (the small one capped at 10/s by its plan, the big one the rest).
        shares = chrome.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0] + ' tr[data-academy]'))"
            ".map(function (r) { return [r.getAttribute('data-academy'), r.cells[2].textContent,"
            " r.cells[3].textContent]; })", section)
        assert sorted(shares) == sorted([[big, "40", "-"], [small, "10", "10"]]), shares
        # The page reads its live part again by itself: what waits goes down, no reload.
        chrome.execute_script("window.notReloaded = true;")
        first = waiting(big)
        WebDriverWait(chrome, 15, ignored_exceptions=(WebDriverException,)).until(
            lambda d: 0 <= waiting(big) < first)
        assert chrome.execute_script("return window.notReloaded === true;")
        chrome.save_screenshot(str(shots / "console-channels.png"))
    finally:
        stop.set()
        for thread in senders:
            thread.join(10)


def test_an_academy_sees_none_of_another_academys_jobs(api, chrome, shots):
    ours, theirs = make_tenant(), make_tenant()
    our_key, their_key = make_key(ours), make_key(theirs)
    mine = submit(api, our_key, {"intent_key": "system.exec.echo", "intent_params": {}}).json()
    other = submit(api, their_key, {"intent_key": "system.exec.echo",
                                    "intent_params": {}}).json()
    log_in(chrome, api, our_key)
    listed = shown_jobs(chrome)
    assert mine["id"] in listed and other["id"] not in listed
    assert all(str(job_row(j)["tenant_id"]) == ours for j in listed)
    chrome.get(f"{api.url}/ui/jobs/{other['id']}")
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Not found"
    chrome.get(f"{api.url}/ui/jobs?q={other['id']}")
    assert shown_jobs(chrome) == []
    # On a phone's width the list still reads: no column runs off the page.
    chrome.set_window_size(390, 844)
    chrome.get(f"{api.url}/ui/jobs/{mine['id']}")
    wide = chrome.execute_script("return document.documentElement.scrollWidth")
    assert wide <= 390


# --- offline ----------------------------------------------------------------------------------


@pytest.fixture
def offline_chrome(api, tmp_path) -> Iterator[tuple[webdriver.Remote, str]]:
    """A Chromium whose network namespace has no internet, only the API's port (tests/offline.py),
    and what its namespace said when asked to reach the internet."""
    from tests.offline import OfflineDriver, namespaces_work

    if not namespaces_work():
        pytest.skip("unshare -n is refused here (it needs root or user namespaces)")
    side = OfflineDriver(api.port, tmp_path, CHROMEDRIVER)
    driver = webdriver.Remote(command_executor=side.url, options=chrome_options())
    driver.set_page_load_timeout(30)
    try:
        yield driver, side.said
    finally:
        driver.quit()
        side.close()


def test_the_console_works_in_a_browser_with_no_internet(api, offline_chrome):
    chrome, said = offline_chrome
    assert "the internet: unreachable" in said  # no route out of the browser's namespace
    tenant = make_tenant(f"섬 학원 {uuid.uuid4().hex[:6]}")
    key = make_key(tenant)
    first = submit(api, key, {"intent_key": "system.exec.echo",
                              "intent_params": {"섬": "울릉도"}}).json()["id"]
    wait_for_status(first, "completed")

    log_in(chrome, api, key)
    assert shown_jobs(chrome) == [first]
    # What a page would load from a CDN cannot come: the browser itself finds no way out.
    reached = chrome.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch('https://cdn.jsdelivr.net/npm/htmx.org/dist/htmx.min.js', {mode: 'no-cors'})"
        ".then(function () { done('reached'); }, function (e) { done('failed: ' + e); });")
    assert reached.startswith("failed"), reached
    # The page's own script and stylesheet came from the API, and its live part goes on.
    styled = chrome.execute_script(
        "return getComputedStyle(document.querySelector('table.jobs')).borderCollapse")
    assert styled == "collapse"
    second = submit(api, key, {"intent_key": "system.exec.echo", "intent_params": {}}).json()["id"]
    WebDriverWait(chrome, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda d: shown_jobs(d) == [second, first])
    click(chrome, f'tr[data-job="{first}"] a.id')
    wait_text(chrome, "울릉도")
    loaded = chrome.execute_script(
        "return performance.getEntriesByType('resource').map(function (r) { return r.name; })")
    assert loaded and all(name.startswith(api.url) for name in loaded)
