"""A real Chromium for the page's tests, driven by Selenium through Debian's ``chromedriver``: headless, offline
(the driver and browser are found on PATH, never downloaded), downloads allowed into a folder, the console logged.
:func:`browser_or_skip_reason` says why the tests skip when Chromium or Selenium is missing (``.ci/run`` installs
them with apt-get when it can)."""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
WINDOW = (1280, 900)


def _first_on_path(names: tuple[str, ...], variable: str) -> str | None:
    given = os.environ.get(variable)
    if given:
        return given if Path(given).exists() else None
    return next((found for name in names if (found := shutil.which(name))), None)


def browser_or_skip_reason() -> tuple[tuple[str, str] | None, str]:
    """``((browser, driver), "")``, or ``(None, why the browser tests skip)``."""
    if importlib.util.find_spec("selenium") is None:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    browser = _first_on_path(BROWSERS, "COMCLOAK_CHROMIUM")
    driver = _first_on_path(DRIVERS, "COMCLOAK_CHROMEDRIVER")
    if browser is None or driver is None:
        return None, ("Chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver; "
                      ".ci/run installs them when it can)")
    return (browser, driver), ""


def start_chromium(browser: str, driver: str, downloads: Path):
    """A headless Chromium under Selenium: downloads go to ``downloads``, the console is kept for ``get_log``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    chromium = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chromium.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return chromium


def full_page_screenshot(chromium, path: Path) -> None:
    """The whole page, beyond the window, as a PNG at ``path`` (Chrome's DevTools ``Page.captureScreenshot``)."""
    size = chromium.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = chromium.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                                "clip": clip})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
