"""Screenshot of the demo page with a reconstruction, for clients/web/README.md.

    make demo &                      # or: python -m facerecon_web.demo --weights ...
    python clients/web/tools/screenshot.py --photo face.jpg --out clients/web/screenshot.png

Drives the system's headless Chromium (Debian: chromium, chromium-driver) with selenium:
uploads the photo, waits for the viewer, turns the head a little so it reads as 3D.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import WebDriverWait

from facerecon_web.headless import CHROMIUM_FLAGS

FLAGS = (*CHROMIUM_FLAGS, "--hide-scrollbars")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("clients/web/screenshot.png"))
    parser.add_argument("--turn", type=int, default=80, help="drag across the viewer, pixels")
    parser.add_argument("--size", default="1200,1300", help="window width,height")
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (*FLAGS, f"--window-size={args.size}"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(args.url)
            body = driver.find_element("tag name", "body")
            WebDriverWait(driver, 30).until(lambda d: body.get_attribute("data-state") == "idle")
            driver.find_element("id", "file").send_keys(str(args.photo.resolve()))
            WebDriverWait(driver, 300).until(
                lambda d: body.get_attribute("data-state") in ("ready", "error")
            )
            if body.get_attribute("data-state") == "error":
                print(driver.find_element("id", "error").text)
                return 1
            canvas = driver.find_element("css selector", "#viewer canvas")
            ActionChains(driver).click_and_hold(canvas).move_by_offset(
                args.turn, 0
            ).release().perform()
            time.sleep(2)  # OrbitControls' damping settles
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
