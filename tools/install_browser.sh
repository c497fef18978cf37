#!/usr/bin/env bash
# Install what the real-browser widget test (tests/test_browser.py, marker `browser`) needs:
# Debian's `chromium` package when /usr/bin/chromium is missing. The `playwright` Python package comes
# from the project's `browser` extra (pip install -e '.[browser]'); it drives this system Chromium via
# executable_path. Never run `playwright install`: it downloads its own browser, which fails offline.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo -n"; else echo "need root (or sudo) to apt-get install chromium" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version || true
