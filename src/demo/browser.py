"""A headless Chromium driving the demo page (its browser test and its benchmark): Debian's
``chromium`` and ``chromium-driver`` (``bash setup.sh --dev``) through Selenium; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1280,1400 "
    "--autoplay-policy=no-user-gesture-required"
)


def missing() -> list[str]:
    """The browser files that are not installed."""
    return [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]


def chromium(profile: Path, downloads: Path) -> Any:
    """A new headless Chromium (a Selenium WebDriver) with its own profile, saving downloads to ``downloads``."""
    if missing():
        raise FileNotFoundError(f"{', '.join(missing())} missing: `bash setup.sh --dev` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS.split():
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    downloads.mkdir(parents=True, exist_ok=True)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def wait_for(driver: Any, script: str, timeout: float = 120) -> Any:
    """Poll a script in the page until it returns something truthy; returns it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(script))


def fill(driver: Any, element_id: str, text: str) -> None:
    el = driver.find_element("id", element_id)
    el.clear()
    el.send_keys(text)
