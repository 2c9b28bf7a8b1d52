"""The coordinator's dashboard page (src/shardnet/dashboard/index.html) in a real headless
Chromium, driven by Playwright: first against a scripted fake `/api/state`, then (slow)
against a real coordinator and workers.

Needs the Debian `chromium` package and the `playwright` Python package (its bundled driver
only; browsers are never downloaded). Without them the tests skip, except under CI=true
where they fail, so CI cannot silently stop testing the page.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shardnet.client import Client
from shardnet.demo import demo_inputs

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # optional dev tool: the `browser` fixture skips (or fails in CI)
    sync_playwright = None

INDEX_HTML = Path(__file__).resolve().parents[1] / "src" / "shardnet" / "dashboard" / "index.html"
CHROMIUM = os.environ.get("SHARDNET_CHROMIUM", "/usr/bin/chromium")
# Without these, Chromium on a headless, offline CI machine stalls or crashes at start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The page polls every second; give every live update several polls to show.
UPDATE_MS = 10_000

JOB_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
WORKER_ADDRESSES = {
    "worker-1": "0x1111111111111111111111111111111111111111",
    "worker-2": "0x2222222222222222222222222222222222222222",
    "cheater": "0x3333333333333333333333333333333333333333",
}
XSS = '<img src=x onerror="window.__xss = 1">'
HUGE_STAKE_WEI = "123456789123456789123456789123"  # beyond a float's 53 bits


# --- browser fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = None
    if sync_playwright is None:
        missing = "the playwright package is not installed (pip install playwright)"
    elif not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"dashboard tests need a browser in CI: {missing}")
        pytest.skip(missing)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh 1280×800 page; fails the test if the page's script throws."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(UPDATE_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the dashboard's script: {errors}"


# --- a fake coordinator HTTP server ------------------------------------------------------


class FakeCoordinator:
    """The dashboard's view of a coordinator: the page at `/` and a mutable `/api/state`,
    served by aiohttp on a free loopback port from a background thread. `down()` closes the
    listening socket and every connection; `up()` listens again on the same port."""

    def __init__(self, state: dict) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-coordinator.loop", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.page_loads = 0

    def __enter__(self) -> FakeCoordinator:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def update(self, change: Callable[[dict], None]) -> None:
        with self._lock:
            change(self._state)

    def up(self) -> None:
        self._run(self._listen())

    def down(self) -> None:
        if self._runner is not None:
            self._run(self._runner.cleanup())
            self._runner = None

    def _run(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/api/state", self._api_state)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def _index(self, request: web.Request) -> web.Response:
        self.page_loads += 1
        return web.Response(text=INDEX_HTML.read_text(), content_type="text/html")

    async def _api_state(self, request: web.Request) -> web.Response:
        with self._lock:
            body = json.dumps(self._state)
        return web.Response(text=body, content_type="application/json")


def worker(worker_id: str, port: int, **overrides) -> dict:
    return {
        "id": worker_id,
        "endpoint": f"127.0.0.1:{port}",
        "live": True,
        "cpu_model": "AMD EPYC 7B13",
        "cpu_count": 2,
        "memory_bytes": 25_000_000_000,
        "providers": ["CPUExecutionProvider"],
        "gpus": [],
        "rows_per_second": 15000.0,
        "shards_done": 12,
        "shards_failed": 0,
        "checks_passed": 3,
        "strikes": 0,
        "chain_address": WORKER_ADDRESSES[worker_id],
        "stake_wei": "1000000000000000000",
        "a_field_from_the_future": {"ignored": True},
        **overrides,
    }


def initial_state() -> dict:
    now = time.time()
    return {
        "coordinator": {
            "address": "127.0.0.1:8001",
            "chain_address": "0x" + "c0" * 20,
            "payment_policy": "open",
            "spot_check_p": 0.1,
            "uptime_s": 12.3,
        },
        "workers": [
            worker(
                "worker-1",
                40001,
                providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
                gpus=[{"name": "NVIDIA H200", "memory_bytes": 150_000_000_000}],
            ),
            worker("worker-2", 40002, cpu_model=XSS, stake_wei=HUGE_STAKE_WEI),
            worker("cheater", 40003, stake_wei=None),
        ],
        "jobs": [
            {
                "id": JOB_ID,
                "model": "mlp",
                "rows": 4096,
                "shards_total": 12,
                "shards_done": 0,
                "status": "running",
                "started": now - 3,
                "finished": None,
                "workers": ["worker-1", "worker-2", "cheater"],
                "escrow": "0x" + "e5" * 32,
                "tx_hash": None,
                "charge_wei": "4096000000000000",
                "error": None,
            },
            {
                "id": "0f" * 16,
                "model": "mlp",
                "rows": 10,
                "shards_total": 1,
                "shards_done": 0,
                "status": "failed",
                "started": now - 60,
                "finished": now - 59,
                "workers": [],
                "escrow": None,
                "tx_hash": None,
                "charge_wei": None,
                "error": "UNAVAILABLE: no live workers",
            },
        ],
        "verdicts": [],
        "payments": [],
        "a_field_from_the_future": [1, 2, 3],
    }


def shards_done(count: int) -> Callable[[dict], None]:
    def change(state: dict) -> None:
        state["jobs"][0]["shards_done"] = count

    return change


def complete(state: dict) -> None:
    job = state["jobs"][0]
    job.update(shards_done=12, status="completed", finished=time.time())


def settle_and_catch_the_cheater(state: dict) -> None:
    job = state["jobs"][0]
    job.update(status="settled", tx_hash="0x" + "ab" * 32)
    state["payments"].append(
        {
            "job_id": JOB_ID,
            "escrow": job["escrow"],
            "status": "settled",
            "tx_hash": job["tx_hash"],
            "charge_wei": "4096000000000000",
            "coordinator_fee_wei": "204800000000000",
            "payments": [
                {"worker": WORKER_ADDRESSES["worker-1"], "amount_wei": "1297000000000000"},
                {"worker": WORKER_ADDRESSES["worker-2"], "amount_wei": "2594200000000000"},
            ],
        }
    )
    state["verdicts"].append(
        {
            "id": 1,
            "job_id": JOB_ID,
            "shard": 3,
            "outcome": "primary_wrong",
            "loser": "cheater",
            "referee": "worker-2",
            "reason": "outputs differ from the referee's beyond tolerance",
            "slash_status": "slashed",
            "slash_tx": "0x" + "5a" * 32,
        }
    )
    cheater = next(w for w in state["workers"] if w["id"] == "cheater")
    cheater.update(live=False, strikes=1)


def worker_row(page: Page, worker_id: str):
    return page.locator(f'[data-testid="worker-row"][data-worker-id="{worker_id}"]')


def job_row(page: Page, job_id: str):
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')


# --- tests ---------------------------------------------------------------------------------


def test_dashboard_follows_a_changing_network(page: Page, tmp_path: Path) -> None:
    with FakeCoordinator(copy.deepcopy(initial_state())) as fake:
        page.goto(fake.url)

        # Network: the coordinator line and every worker, with stake in exact ETH.
        expect(page).to_have_title("shardnet — live network")
        expect(page.get_by_test_id("coordinator")).to_contain_text("127.0.0.1:8001")
        expect(page.get_by_test_id("coordinator")).to_contain_text("open")
        expect(page.get_by_test_id("worker-row")).to_have_count(3)
        expect(worker_row(page, "worker-1")).to_have_attribute("data-live", "true")
        expect(worker_row(page, "worker-1")).to_contain_text("NVIDIA H200")
        expect(worker_row(page, "worker-1")).to_contain_text("CUDA")
        expect(worker_row(page, "worker-1").get_by_test_id("worker-stake")).to_have_text("1.000000")
        expect(worker_row(page, "worker-2").get_by_test_id("worker-stake")).to_have_text(
            "123456789123.456789"
        )
        expect(worker_row(page, "cheater").get_by_test_id("worker-stake")).to_have_text("—")
        expect(page.get_by_test_id("last-updated")).to_contain_text("Last updated")
        expect(page.get_by_test_id("connection-lost")).to_be_hidden()

        # Text from peers is shown as text, never parsed as HTML.
        expect(worker_row(page, "worker-2")).to_contain_text(XSS)
        assert page.locator("main img").count() == 0
        assert page.evaluate("window.__xss") is None

        # Jobs: the running job with an empty bar, and a failed one with its error.
        row = job_row(page, JOB_ID)
        progress = row.get_by_test_id("job-progress")
        expect(row).to_have_attribute("data-status", "running")
        expect(row).to_contain_text("0.004096")
        expect(progress).to_have_attribute("data-done", "0")
        expect(progress).to_have_attribute("data-total", "12")
        expect(job_row(page, "0f" * 16)).to_have_attribute("data-status", "failed")
        expect(job_row(page, "0f" * 16)).to_contain_text("no live workers")
        expect(page.get_by_test_id("verdict-row")).to_have_count(0)
        expect(page.get_by_test_id("payment-row")).to_have_count(0)

        # Everything below must update in place: a reload would clear this marker.
        page.evaluate("window.__sameDocument = true")

        fake.update(shards_done(5))
        expect(progress).to_have_attribute("data-done", "5")
        expect(progress).to_contain_text("5 / 12")
        page.screenshot(path=tmp_path / "dashboard-running.png", full_page=True)

        fake.update(complete)
        expect(row).to_have_attribute("data-status", "completed")
        expect(progress).to_have_attribute("data-done", "12")

        fake.update(settle_and_catch_the_cheater)
        expect(row).to_have_attribute("data-status", "settled")
        expect(row.get_by_test_id("job-tx")).to_have_text("0xababab…abab")
        payment = page.get_by_test_id("payment-row")
        expect(payment).to_have_count(1)
        expect(payment).to_have_attribute("data-status", "settled")
        expect(payment.get_by_test_id("payment-amount")).to_have_text(
            ["worker-1: 0.001297", "worker-2: 0.002594"]
        )
        verdict = page.get_by_test_id("verdict-row")
        expect(verdict).to_have_count(1)
        expect(verdict.get_by_test_id("verdict-loser")).to_have_text("cheater")
        expect(verdict.get_by_test_id("verdict-outcome")).to_have_text("primary_wrong")
        expect(verdict.get_by_test_id("verdict-slash")).to_have_text("slashed")
        expect(worker_row(page, "cheater")).to_have_attribute("data-live", "false")
        expect(worker_row(page, "cheater").get_by_test_id("worker-live")).to_have_text("offline")

        fake.down()
        banner = page.get_by_test_id("connection-lost")
        expect(banner).to_be_visible()
        expect(page.get_by_test_id("job-row")).to_have_count(2)  # the last data stays shown
        page.screenshot(path=tmp_path / "dashboard-connection-lost.png", full_page=True)

        fake.up()
        expect(banner).to_be_hidden()
        before = page.get_by_test_id("last-updated").get_attribute("data-updated-at")
        expect(page.get_by_test_id("last-updated")).not_to_have_attribute(
            "data-updated-at", before or ""
        )

        assert page.evaluate("window.__sameDocument") is True
        assert fake.page_loads == 1
        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=screenshot, full_page=True)
        print(f"dashboard screenshot: {screenshot}")


def test_eth_amounts_are_exact(page: Page) -> None:
    with FakeCoordinator(copy.deepcopy(initial_state())) as fake:
        page.goto(fake.url)
        cases = {
            "0": "0.000000",
            "1000000000000000000": "1.000000",
            "4096000000000000": "0.004096",
            "1500000000000": "0.000002",  # rounds half up at the 6th decimal
            "1499999999999": "0.000001",
            "-2500000000000000": "-0.002500",
            None: "—",
            HUGE_STAKE_WEI: "123456789123.456789",
        }
        got = page.evaluate(
            "(cases) => cases.map((w) => window.shardnetDashboard.formatEth(w))", list(cases)
        )
        assert got == list(cases.values())


@pytest.mark.slow
def test_dashboard_on_a_real_network(page: Page, fresh_network, tmp_path: Path) -> None:
    net = fresh_network
    net.start_coordinator("--http-listen", "127.0.0.1:0")
    for _ in range(3):
        net.start_worker("--intra-op-threads", "1")
    net.wait_for_workers(3)

    page.goto(f"http://{net.coordinator.info['http_address']}/")
    expect(page.get_by_test_id("worker-row")).to_have_count(3)
    for proc in net.workers:
        expect(worker_row(page, proc.name)).to_have_attribute("data-live", "true")
    expect(page.get_by_test_id("coordinator")).to_contain_text(net.coordinator.address)

    outcome: dict = {}

    def submit() -> None:
        try:
            with Client(net.coordinator.address) as client:
                outcome["result"] = client.infer("mlp", demo_inputs(20000))
        except Exception as exc:  # re-raised below, in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=submit, name="dashboard-test.submit")
    thread.start()
    try:
        expect(page.get_by_test_id("job-row").first).to_be_visible(timeout=60_000)
    finally:
        thread.join(timeout=120)
    assert not thread.is_alive(), "the job did not finish within 120 s"
    if "error" in outcome:
        raise outcome["error"]

    (job_id,) = outcome["result"].job_ids
    row = job_row(page, job_id)
    expect(row).to_have_attribute("data-status", "completed")
    expect(row).to_contain_text("mlp")
    progress = row.get_by_test_id("job-progress")
    total = progress.get_attribute("data-total")
    assert total is not None and int(total) >= 1
    expect(progress).to_have_attribute("data-done", total)
    expect(page.get_by_test_id("connection-lost")).to_be_hidden()
    screenshot = tmp_path / "dashboard-real-network.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"dashboard screenshot: {screenshot}")
