"""A real browser (headless Debian Chromium + chromedriver, driven by Selenium) against the real server over the
demo's records: log in, open a patient, print the referral letter to PDF (DevTools Page.printToPDF), export CSV.

Skips when Chromium is not installed, unless CONSOLE_BROWSER_REQUIRED=1 (set by .ci/run), where absence fails.
CONSOLE_SCREENSHOTS=<folder> also saves the screenshots used in docs/console.md (7-inch panel, tablet, laptop).
"""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from device.app import run_demo
from device.config import load_config
from device.console.auth import Credentials
from device.console.context import ConsoleSettings
from device.console.server import make_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
USER, PASSWORD = "nurse", "pin-123456"
# Chromium on a closed network: no background connections, no component updates, no sync, no first-run UI
# (docs/console.md); --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio")
SIZES = {"panel": (800, 480), "tablet": (1024, 768), "laptop": (1366, 900)}

pytestmark = pytest.mark.slow


def _need_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(Path(p).name))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (dev extra)")
    if missing:
        if os.environ.get("CONSOLE_BROWSER_REQUIRED") == "1":
            pytest.fail(f"the browser test must run here but {missing} are missing: apt-get install chromium "
                        "chromium-driver")
        pytest.skip(f"headless Chromium not installed ({missing}); apt-get install chromium chromium-driver")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo's records served by waitress on a free localhost port."""
    out = tmp_path_factory.mktemp("browser")
    summary = run_demo(out / "demo")
    records = out / "demo" / "records"
    Credentials.for_records(records).set_password(USER, PASSWORD)
    srv = make_server(ConsoleSettings(records=records, unit=load_config()), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}", summary, out
    srv.close()
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('profile')}")
    options.add_argument("--window-size=1366,900")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.downloads = downloads
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for size, (w, h) in SIZES.items():  # the page's viewport exactly, as on that screen
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": size != "laptop"})
        time.sleep(0.3)
        driver.save_screenshot(str(Path(folder) / f"{name}_{size}.png"))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _images_loaded(driver) -> list[int]:
    return driver.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")


def test_log_in_open_a_patient_print_a_referral_and_export_csv(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.print_page_options import PrintOptions

    base, summary, out = server
    referable = next(pid for pid, v in summary.patients.items() if v == "referable")

    browser.get(base + "/")  # not logged in: the login page
    assert "/login" in browser.current_url
    assert browser.find_elements(By.NAME, "password")
    _shot(browser, "login")
    browser.find_element(By.NAME, "user").send_keys(USER)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()

    assert browser.current_url.rstrip("/") == base  # the day list
    body = browser.find_element(By.TAG_NAME, "body").text
    for pid in summary.patients:
        assert pid in body
    assert "Research tool — not a medical device" in body
    _shot(browser, "day")

    browser.find_element(By.LINK_TEXT, referable).click()
    assert f"/patient/{referable}" in browser.current_url
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Right eye" in body and "Left eye" in body and "cut-off" in body and "sha256" in body
    sizes = _images_loaded(browser)
    assert sizes and all(w > 0 for w in sizes), sizes  # photographs and result screens load behind the login
    _shot(browser, "patient")

    browser.find_element(By.PARTIAL_LINK_TEXT, "Referral letter (A4)").click()
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Referral to an eye specialist" in body and "Demo clinic (synthetic data)" in body
    assert "results must not be used for diagnosis or treatment decisions" in body
    _shot(browser, "referral")
    options = PrintOptions()
    options.page_width, options.page_height = 21.0, 29.7  # A4, cm
    options.background = True
    pdf = base64.b64decode(browser.print_page(options))
    (out / "referral_a4.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and len(pdf) > 20_000
    pages = re.findall(rb"/Type\s*/Page[^s]", pdf)
    assert len(pages) == 1, f"the A4 letter printed on {len(pages)} pages"

    browser.get(browser.current_url.replace("paper=A4", "paper=A5"))
    options.page_width, options.page_height = 14.8, 21.0
    pdf5 = base64.b64decode(browser.print_page(options))
    (out / "referral_a5.pdf").write_bytes(pdf5)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf5)) == 1, "the A5 letter must fit one sheet"

    browser.get(base + "/")
    browser.find_element(By.LINK_TEXT, "Export").click()
    _shot(browser, "export")
    browser.find_element(By.ID, "export-csv").click()
    deadline = time.monotonic() + 30
    files: list[Path] = []
    while time.monotonic() < deadline:
        files = [p for p in browser.downloads.glob("*.csv")]
        if files and not list(browser.downloads.glob("*.crdownload")):
            break
        time.sleep(0.2)
    assert files, "the CSV was not downloaded"
    with files[0].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary.screenings
    assert {r["patient_id"] for r in rows} == set(summary.patients)

    browser.get(base + "/unit")
    assert "Model card" in browser.find_element(By.TAG_NAME, "body").text
    _shot(browser, "unit")
