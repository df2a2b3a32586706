"""The headless Chromium the dashboard tests drive (Debian's ``chromium`` and ``chromedriver``): one set-up
for the demo's dashboard and the hostile-names dashboard test."""

from __future__ import annotations

from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

__all__ = ["CHROMEDRIVER", "CHROMIUM", "headless_chrome"]


def headless_chrome() -> Any:
    """A selenium Chrome driver on headless Chromium that keeps the browser console's log; quit it after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
