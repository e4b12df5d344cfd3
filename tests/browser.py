"""Debian's headless Chromium driven by Playwright (which never downloads a browser here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def sync_playwright():
    """playwright.sync_api.sync_playwright, or skip the test when Playwright or Chromium is missing."""
    api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    return api.sync_playwright()


def launch(p):
    """A headless Chromium of `p` (what sync_playwright() gave)."""
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
