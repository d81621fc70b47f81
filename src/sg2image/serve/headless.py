"""Headless Chromium for the editor's end-to-end test and its README screenshot.

Started as root on a machine with a closed network: no sandbox, and none of Chromium's
background connections (refused here, many at a time, and slow to fail).
"""

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is not used
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
