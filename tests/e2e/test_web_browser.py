"""The web UI in real headless Chromium (Debian's `chromium` and `chromium-driver`).

One server for the module: gRPC and the web UI in this process over one RunService on a
SQLite file, with the demo's runs written through the SDK, as `runhistory demo` does. Each
test saves screenshots of the pages it looked at under test-artifacts/screenshots/.

Without Chromium the tests skip, except where RUNHISTORY_REQUIRE_BROWSER is set (CI sets
it and installs Chromium first): there a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import runhistory
from runhistory.domain.identity import RunPath
from runhistory.domain.values import LogCall
from runhistory.service.auth import Role
from runhistory.service.bootstrap import Running, start
from runhistory.service.cli.demo import rewind_and_fork
from runhistory.service.settings import Settings
from runhistory.service.web.server import RunningWeb

CHROMIUM = Path(os.environ.get("RUNHISTORY_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RUNHISTORY_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WAIT = 20.0


def browser_problem() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return f"no {' and no '.join(missing)}: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


@dataclass
class Demo:
    server: Running
    web: RunningWeb
    rewound: str  # entity/project/run_id of the run rewound to step 200
    fork: str  # the run forked from it at step 300
    writer: str  # API keys of entity demo
    reader: str

    def url(self, path: str, suffix: str = "") -> str:
        entity, project, run_id = path.split("/")
        return f"{self.web.url}/{entity}/{project}/runs/{run_id}{suffix}"


@pytest.fixture(scope="module", autouse=True)
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs' spools go to a folder of the module's, not the working folder (a superseded
    session's spool is kept for `runhistory sync`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNHISTORY_DIR", str(tmp_path_factory.mktemp("spool")))
        yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    db = tmp_path_factory.mktemp("web-browser") / "demo.db"
    settings = Settings(db=str(db))
    server = start(settings, "127.0.0.1:0", "127.0.0.1:0")
    assert server.web is not None and server.keys is not None
    web, keys = server.web, server.keys
    writer, reader = keys.create("demo", Role.WRITER)[1], keys.create("demo", Role.READER)[1]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            paths = rewind_and_fork(server.address, writer)
        yield Demo(server, web, paths["rewound"], paths["fork"], writer, reader)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver(demo: Demo) -> Iterator[Any]:
    problem = browser_problem()
    if problem and os.environ.get("RUNHISTORY_REQUIRE_BROWSER"):
        pytest.fail(problem)  # CI installs Chromium: there, its absence is a failure
    if problem:
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1366,900",  # a laptop screen
        "--disable-gpu",
    ):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(WAIT)
    # Let the page write and read the clipboard, as a person allowing it would.
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {
            "origin": demo.web.url,
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        },
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Every page wants a session: sign in through the form, as a person would.
    browser.get(f"{demo.web.url}/demo/rewind")
    wait_for(lambda: "/login" in browser.current_url, "the sign-in page")
    screenshot(browser, "00-sign-in")
    browser.find_element("id", "key").send_keys(demo.reader)
    browser.find_element("css selector", "form button[type=submit]").click()
    wait_for(lambda: browser.current_url.endswith("/demo/rewind"), "back to the project page")
    yield browser
    browser.quit()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # the element is not there yet, or went stale
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), f"{url} ready")
    assert driver.execute_script("return document.body.dataset.ready") == "1", driver.find_element(
        "css selector", "main"
    ).text


def screenshot(driver: Any, name: str) -> None:
    """The whole page, as tall as its content (within reason)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, min(max(900, height + 40), 3000))
    time.sleep(0.3)  # let plotly redraw at the new size
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    driver.set_window_size(1366, 900)


def css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def click(driver: Any, selector: str) -> None:
    element = css(driver, selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def traces(driver: Any, key: str) -> list[dict[str, Any]]:
    """What plotly drew in the chart of `key`: each trace's name, part and x values."""
    return driver.execute_script(
        "const gd = document.getElementById(arguments[0]);"
        "return gd && gd.data ? gd.data.map(t => ({name: t.name, meta: t.meta, x: t.x})) : null;",
        f"chart-{key}",
    )


# ---- the pages ---------------------------------------------------------------------------


def test_the_session_cookie_is_httponly_and_samesite(driver: Any, demo: Demo) -> None:
    cookies = {c["name"]: c for c in driver.get_cookies()}
    session = cookies["rh_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert demo.reader not in session["value"]
    # Page scripts cannot read it.
    assert "rh_session" not in driver.execute_script("return document.cookie")


def test_project_page_lists_the_demo_runs(driver: Any, demo: Demo) -> None:
    open_page(driver, f"{demo.web.url}/demo/rewind")
    rows = driver.find_elements("css selector", "#runs tbody tr")
    ids = [row.get_attribute("data-run") for row in rows]
    assert ids == [demo.rewound.split("/")[2], demo.fork.split("/")[2]]
    fork_row = rows[1].text
    assert "finished" in fork_row and "@ 300" in fork_row
    assert len(driver.find_elements("css selector", "#runs svg.sparkline")) == 2
    wait_for(lambda: traces(driver, "additional_metric") or traces(driver, "metric"), "chart")
    screenshot(driver, "01-project")


def test_overview_copies_the_run_id(driver: Any, demo: Demo) -> None:
    open_page(driver, f"{demo.web.url}/demo/rewind")
    click(driver, f'#runs tr[data-run="{demo.rewound.split("/")[2]}"] a.run-link')
    wait_for(lambda: driver.current_url == demo.url(demo.rewound), "the run's overview")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "ready")
    run_id = demo.rewound.split("/")[2]
    assert css(driver, "#run-id").text == run_id
    assert "archived version 1" in css(driver, "#forked-from").text
    assert "rewound to step 200" in css(driver, "#forked-from").text
    versions = driver.find_elements("css selector", "table.versions tbody tr")
    assert [v.text.split()[0] for v in versions] == ["v1", "v2"]
    assert css(driver, "#forks").text.startswith(demo.fork)

    click(driver, "#copy-id")
    wait_for(lambda: css(driver, "#copy-id").text == "Copied", "the button to say Copied")
    pasted = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, e => done('error: ' + e));"
    )
    assert pasted == run_id
    screenshot(driver, "02-overview-rewound")


def test_forked_from_of_a_rewound_run_opens_the_archived_version(driver: Any, demo: Demo) -> None:
    open_page(driver, demo.url(demo.rewound))
    click(driver, "#forked-from a.forked-from-version")
    wait_for(lambda: driver.current_url == demo.url(demo.rewound, "/versions/1"), "version 1")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "ready")
    assert "Archived version 1" in css(driver, "#version-status").text
    assert "rewound to step 200" in css(driver, "#version-status").text
    # Version 1 as it was: 300 rows of metric, steps 0..299.
    (trace,) = wait_for(lambda: traces(driver, "metric"), "the chart of version 1")
    assert trace["meta"] == "own" and len(trace["x"]) == 300
    assert trace["x"][0] == 0 and trace["x"][-1] == 299
    screenshot(driver, "03-archived-version")


def pasted(driver: Any) -> str:
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.clipboard.readText().then(done, e => done('error: ' + e));"
    )


def test_immutable_ids_beside_the_run_id_and_on_archived_versions(driver: Any, demo: Demo) -> None:
    with runhistory.Api(address=demo.server.address, api_key=demo.reader) as api:
        archived, live = (v["immutable_id"] for v in api.run(demo.rewound).versions())
    open_page(driver, demo.url(demo.rewound))
    assert css(driver, "#immutable-id").text == live
    click(driver, "#copy-immutable-id")
    wait_for(lambda: css(driver, "#copy-immutable-id").text == "Copied", "Copied")
    assert pasted(driver) == live
    status = css(driver, "#copy-immutable-id-status").get_attribute("textContent")
    assert status == "immutable ID copied to the clipboard"  # for screen readers
    screenshot(driver, "02b-overview-immutable-id")

    open_page(driver, demo.url(demo.rewound, "/versions/1"))
    assert css(driver, "#immutable-id").text == archived != live
    click(driver, "#copy-immutable-id")
    wait_for(lambda: css(driver, "#copy-immutable-id").text == "Copied", "Copied")
    assert pasted(driver) == archived
    screenshot(driver, "03b-archived-version-immutable-id")

    # The fork's Forked From names the run, the version and that version's immutable ID.
    open_page(driver, demo.url(demo.fork))
    assert css(driver, "#forked-from .forked-from-id").text == live


def test_forked_from_of_a_fork_opens_its_source(driver: Any, demo: Demo) -> None:
    open_page(driver, demo.url(demo.fork))
    link = css(driver, "#forked-from")
    assert f"{demo.rewound} at step 300, version 2" in link.text
    screenshot(driver, "04-overview-fork")
    click(driver, "#forked-from a.forked-from-run")
    wait_for(lambda: driver.current_url == demo.url(demo.rewound), "the source's overview")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "ready")
    assert css(driver, "#run-id").text == demo.rewound.split("/")[2]


def test_fork_chart_shows_inherited_prefix_and_own_rows(driver: Any, demo: Demo) -> None:
    open_page(driver, demo.url(demo.fork, "/charts"))
    drawn = wait_for(lambda: traces(driver, "metric"), "the metric chart")
    by_part = {t["meta"]: t for t in drawn}
    assert set(by_part) == {"inherited", "own"}
    inherited, own = by_part["inherited"], by_part["own"]
    assert "inherited from" in inherited["name"]
    # The source's rows with metric up to step 300: 0..200 then 201..299 every other step.
    with runhistory.Api(address=demo.server.address, api_key=demo.reader) as api:
        source_steps = [
            r["_step"]
            for r in api.run(demo.rewound).scan_history(keys=["metric"])
            if r["_step"] <= 300
        ]
    assert inherited["x"] == source_steps
    assert own["x"] == list(range(301, 311))
    chart = css(driver, "#chart-metric")
    assert chart.get_attribute("data-inherited-points") == str(len(source_steps))
    assert chart.get_attribute("data-own-points") == "10"
    screenshot(driver, "05-charts-fork")

    # The rewound run's charts mark its rewind at step 200.
    open_page(driver, demo.url(demo.rewound, "/charts"))
    wait_for(lambda: traces(driver, "metric"), "the rewound run's chart")
    shapes = driver.execute_script(
        "return document.getElementById('chart-metric').layout.shapes.map(s => s.x0)"
    )
    assert shapes == [200]
    screenshot(driver, "06-charts-rewound")


def test_walk_the_lineage_tree(driver: Any, demo: Demo) -> None:
    open_page(driver, demo.url(demo.fork, "/lineage"))
    nodes = [n.get_attribute("data-run") for n in driver.find_elements("css selector", "a.node")]
    assert nodes[:2] == [demo.rewound, demo.fork]
    screenshot(driver, "07-lineage-fork")
    click(driver, f'a.node[data-run="{demo.rewound}"]')
    wait_for(lambda: driver.current_url == demo.url(demo.rewound), "the ancestor's overview")

    open_page(driver, demo.url(demo.rewound, "/lineage"))
    tree = css(driver, "#tree").text
    assert "v1 archived, rewound to step 200" in tree and "v2 live" in tree
    ids = [code.text for code in driver.find_elements("css selector", "#tree code.version-id")]
    with runhistory.Api(address=demo.server.address, api_key=demo.reader) as api:
        assert ids == [v["immutable_id"] for v in api.run(demo.rewound).versions()]
    assert re.search(rf"{re.escape(demo.fork)} fork at step 300", tree)
    screenshot(driver, "08-lineage-rewound")
    click(driver, 'a.version-node[data-version="1"]')
    wait_for(lambda: driver.current_url == demo.url(demo.rewound, "/versions/1"), "v1's page")
    driver.back()
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "ready")
    click(driver, f'a.node[data-run="{demo.fork}"]')
    wait_for(lambda: driver.current_url == demo.url(demo.fork), "the fork's overview")


def test_audit_filters_and_shows_the_run_as_of_an_event(driver: Any, demo: Demo) -> None:
    open_page(driver, demo.url(demo.rewound, "/audit"))
    types = [r.text for r in driver.find_elements("css selector", "#events tbody td:nth-child(3)")]
    assert types[:4] == ["Created", "RowsLogged", "Finished", "Rewound"]
    from selenium.webdriver.support.ui import Select

    Select(css(driver, "#event-type")).select_by_value("Rewound")
    wait_for(lambda: "type=Rewound" in driver.current_url, "the filtered listing")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "ready")
    rows = driver.find_elements("css selector", "#events tbody tr")
    assert len(rows) == 1 and "to step 200; version 1 archived" in rows[0].text

    # As of the event before the rewind: version 1, finished, 300 rows.
    open_page(driver, demo.url(demo.rewound, "/audit"))
    finished = driver.find_elements("css selector", "#events tbody tr")[2]
    finished.find_element("css selector", "a.as-of-link").click()
    wait_for(lambda: "position=" in driver.current_url, "the as-of view")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), "ready")
    assert css(driver, "#as-of-rows").text == "300 rows, last step 299"
    screenshot(driver, "09-audit-as-of")


def test_a_running_runs_chart_grows_live(driver: Any, demo: Demo) -> None:
    run = runhistory.init(
        entity="demo", project="rewind", address=demo.server.address, api_key=demo.writer
    )
    try:
        for i in range(50):
            run.log({"loss": 1.0 / (i + 1)})
        run.flush()
        open_page(driver, demo.url(f"demo/rewind/{run.id}", "/charts"))
        driver.execute_script("window.notReloaded = true")
        wait_for(lambda: css(driver, "#live").text.startswith("● live"), "the live marker")
        chart = css(driver, "#chart-loss")
        assert chart.get_attribute("data-own-points") == "50"
        screenshot(driver, "10-live-chart-before")
        for i in range(50, 120):
            run.log({"loss": 1.0 / (i + 1)})
        run.flush()
        wait_for(
            lambda: css(driver, "#chart-loss").get_attribute("data-own-points") == "120",
            "the chart to grow to 120 points",
            timeout=10,
        )
        assert driver.execute_script("return window.notReloaded") is True
        assert len(traces(driver, "loss")[0]["x"]) == 120
        screenshot(driver, "11-live-chart-after")
    finally:
        run.finish()
    wait_for(lambda: css(driver, "#live").text == "", "the live marker to go once finished")


def test_the_project_page_loads_a_page_of_runs_at_a_time(driver: Any, demo: Demo) -> None:
    service = demo.server.service
    for i in range(55):
        session = service.create(RunPath("demo", "many", f"m{i:02d}"))
        calls = [LogCall({"loss": 1.0 / (s + 1 + i)}, 1.0 + s) for s in range(5)]
        service.log(session.path, calls, writer=session.writer)
    open_page(driver, f"{demo.web.url}/demo/many")
    rows = driver.find_elements("css selector", "#runs tbody tr")
    assert [row.get_attribute("data-run") for row in rows] == [f"m{i:02d}" for i in range(50)]
    assert len(driver.find_elements("css selector", "#runs svg.sparkline")) == 50
    assert css(driver, "#run-count").text == "50 runs shown; more to load"
    # The sparklines asked for are those of the runs shown.
    asked = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => n.includes('/sparklines?'))"
    )
    assert len(asked) == 1 and "m49" in asked[0] and "m50" not in asked[0]
    screenshot(driver, "16-project-first-page")

    click(driver, "#load-more")
    wait_for(
        lambda: len(driver.find_elements("css selector", "#runs svg.sparkline")) == 55,
        "the next page with its sparklines",
    )
    assert css(driver, "#run-count").text == "55 runs"
    assert not css(driver, "#load-more").is_displayed()

    open_page(driver, f"{demo.web.url}/demo/many?order=-created_at")
    first = css(driver, "#runs tbody tr").get_attribute("data-run")
    assert first == "m54"
    assert css(driver, "#order").get_attribute("value") == "-created_at"

    # The charts page offers the project's other runs to overlay a page at a time too.
    open_page(driver, f"{demo.web.url}/demo/many/runs/m00/charts")
    wait_for(lambda: traces(driver, "loss"), "the run's chart")
    offered = lambda: driver.find_elements("css selector", "#compare-runs input")  # noqa: E731
    assert len(offered()) == 49  # the first page of 50, less the run itself
    click(driver, "#more-runs")
    wait_for(lambda: len(offered()) == 54, "the next page of runs to overlay")
    assert not css(driver, "#more-runs").is_displayed()
    click(driver, "#overlay-run-m54")
    wait_for(
        lambda: any(t["name"] == "m54" for t in traces(driver, "loss")),
        "the trace of a run from the second page",
    )


def test_charts_overlay_an_archived_version_and_a_fork(driver: Any, demo: Demo) -> None:
    open_page(driver, demo.url(demo.rewound, "/charts"))
    driver.execute_script("window.notReloaded = true")
    wait_for(lambda: traces(driver, "metric"), "the rewound run's chart")
    fork_id = demo.fork.split("/")[2]
    assert "v1 (archived, rewound to step 200)" in css(driver, "#compare-versions").text
    assert f"fork {demo.fork} (at step 300 of v2)" in css(driver, "#compare-versions").text

    click(driver, "#overlay-v1")
    drawn = wait_for(
        lambda: [t for t in traces(driver, "metric") if "v1 (archived)" in t["name"]],
        "the archived version's trace",
    )
    assert drawn[0]["x"] == list(range(300))  # version 1 as it was: steps 0..299
    names = [t["name"] for t in traces(driver, "metric")]
    assert any(name.endswith("v2 (live)") for name in names)
    shapes = driver.execute_script(
        "return document.getElementById('chart-metric').layout.shapes.map(s => s.x0)"
    )
    assert 200 in shapes  # the rewind point, where the two versions part
    legend = driver.execute_script(
        "return [...document.querySelectorAll('#chart-metric .legendtext')].map(t => t.textContent)"
    )
    assert any("v1 (archived)" in text for text in legend), legend
    screenshot(driver, "12-charts-overlay-archived-version")

    click(driver, f"#overlay-fork-{fork_id}")
    wait_for(
        lambda: any(t["name"] == f"fork {fork_id}" for t in traces(driver, "metric")),
        "the fork's trace",
    )
    shapes = driver.execute_script(
        "return document.getElementById('chart-metric').layout.shapes.map(s => s.x0)"
    )
    assert 300 in shapes  # the fork point
    assert driver.execute_script("return window.notReloaded") is True
    screenshot(driver, "13-charts-overlay-fork")

    click(driver, "#overlay-v1")
    wait_for(
        lambda: not any("v1 (archived)" in t["name"] for t in traces(driver, "metric")),
        "the archived version's trace to go",
    )


def test_home_lists_the_readers_projects(driver: Any, demo: Demo) -> None:
    open_page(driver, f"{demo.web.url}/")
    rows = driver.find_elements("css selector", "#projects tbody tr")
    assert "demo/rewind" in [r.get_attribute("data-project") for r in rows]
    assert "Sign out" in css(driver, "header.top").text
    screenshot(driver, "14-home-projects")
    # Other tests add projects to the demo server: follow demo/rewind's own link.
    click(driver, '#projects tr[data-project="demo/rewind"] a.project-link')
    wait_for(lambda: driver.current_url == f"{demo.web.url}/demo/rewind", "the project page")


def test_a_version_archived_while_running_says_so(driver: Any, demo: Demo) -> None:
    common = {"entity": "demo", "project": "crashy", "address": demo.server.address}
    run = runhistory.init(**common, api_key=demo.writer)
    for i in range(5):
        run.log({"loss": float(i)})
    run.flush()  # still running when the rewind archives it
    again = runhistory.init(  # a second session beside the live first one
        **common, resume_from=f"{run.id}?_step=2", api_key=demo.writer, reinit="create_new"
    )
    again.finish()
    with pytest.raises(runhistory.Superseded):
        run.finish()
    open_page(driver, demo.url(run.path))
    first = driver.find_elements("css selector", "table.versions tbody tr")[0]
    assert "archived (was running)" in first.text and "running" not in first.text.replace(
        "was running", ""
    )
    open_page(driver, demo.url(run.path, "/versions/1"))
    assert "archived (was running)" in css(driver, "h1").text
    assert css(driver, "dl.fields").text.split("Last step")[1].split()[0] == "4"
    screenshot(driver, "15-version-archived-while-running")


def test_an_unknown_runs_page_says_why(driver: Any, demo: Demo) -> None:
    driver.get(demo.url("demo/rewind/nope", "/charts"))  # a 404, which the page explains
    reason = wait_for(lambda: css(driver, "#missing-reason").text, "the reason")
    assert reason == "run demo/rewind/nope does not exist"
    assert css(driver, "h1").text == "Not found"


def test_a_run_crashed_by_silence_shows_crashed_and_its_audit_says_why(
    driver: Any, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = demo.server.service
    session = service.init("demo", "crash", "silent")
    service.log(session.path, [LogCall({"loss": 1.0}, time.time(), None, None)])
    # The server's clock an hour on: the run's writer has been silent for longer than the
    # crash timeout. It comes back once (revived), then falls silent for good.
    later = time.time() + 3600
    monkeypatch.setattr(service, "clock", lambda: later)
    # Other tests leave running runs on the demo server: this sweep crashes them too.
    assert session.path in service.sweep()
    service.heartbeat(session.path, writer=session.writer)
    later += 3600
    assert service.sweep() == [session.path]

    path = str(session.path)
    open_page(driver, demo.url(path))
    assert css(driver, "h1 .state").text == "crashed"
    open_page(driver, demo.url(path, "/audit"))
    rows = [r.text for r in driver.find_elements("css selector", "#events tbody tr")]
    types = [r.text for r in driver.find_elements("css selector", "#events tbody td:nth-child(3)")]
    assert types[2:] == ["CrashDetected", "Revived", "CrashDetected"]
    assert "crashed: its writer was silent since" in rows[2]
    assert "over the 300 s timeout" in rows[2]
    assert "running again: its writer was heard from" in rows[3]
    screenshot(driver, "12-audit-crashed")
