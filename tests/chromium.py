"""Headless Chromium for the report tests: the page as a person's browser lays it out, probed by a script
that measures it (bounding boxes, not pixels), and screenshots to look at.

Chromium comes from the system's packages (`.ci/run` installs Debian's `chromium` where it can); without it
the tests that need it skip. Started as the machine notes say: headless, no sandbox (root), no GPU, no
background networking (the network is closed), a fresh profile each time.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,1000"]
PROBE = Path(__file__).with_name("report_probe.js")


def executable() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(page: Path, *args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="gradlint-chromium-") as profile:
        proc = subprocess.run([executable(), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
    return proc.stdout


def probe(page: Path) -> dict:
    """What a person would see, measured: the page with the probe script appended, laid out by Chromium, and
    the probe's findings read back from the DOM it dumps."""
    text = page.read_text(encoding="utf-8")
    probed = Path(tempfile.mkdtemp(prefix="gradlint-probe-")) / page.name
    try:
        probed.write_text(text.replace("</body>", f"<script>{PROBE.read_text()}</script></body>"), encoding="utf-8")
        dom = _run(probed, "--dump-dom")
    finally:
        shutil.rmtree(probed.parent, ignore_errors=True)
    found = re.findall(r'<pre id="gradlint-probe">(.*?)</pre>', dom, re.S)  # the last: not the script's comment
    if not found:
        raise AssertionError(f"the probe did not run: {dom[-500:]!r}")
    return json.loads(html.unescape(found[-1]))


def screenshot(page: Path, png: Path, height: int = 6000) -> Path:
    flags = [f"--screenshot={png}", f"--window-size=1280,{height}"]
    _run(page, *flags)
    return png


if __name__ == "__main__":  # python tests/chromium.py report.html out.png: a screenshot to look at
    import sys

    screenshot(Path(sys.argv[1]), Path(sys.argv[2]), int(os.environ.get("HEIGHT", "6000")))
