"""Headless Chromium for the live page's browser test and its bench case: Debian's `chromium` (`make apt-deps`)
driven by Playwright, started the way this offline, root-run machine needs it.

The flags: no sandbox (tests run as root), no GPU, and none of Chromium's background traffic (component updates,
sync, first-run pages), which a closed network only answers with refusals. Playwright gives every launch a fresh
profile folder of its own (its `--user-data-dir`), removed when the browser closes.
"""

from __future__ import annotations

import os
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class BrowserMissing(RuntimeError):
    """Debian's chromium is not installed."""


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium from a started `sync_playwright()`; BrowserMissing names the fix when it is absent."""
    if not os.path.exists(CHROMIUM):
        raise BrowserMissing(f"{CHROMIUM} is missing: `make apt-deps` installs Debian's chromium package")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
