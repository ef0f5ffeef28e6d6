#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests when it is missing (CI calls this before the
# tests). Playwright drives this system browser; no browser is ever downloaded by Playwright.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_chromium.sh: need root or sudo to apt-get install chromium" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium
if [ ! -x "$CHROMIUM" ]; then
  echo "install_chromium.sh: apt-get installed chromium but $CHROMIUM is still missing" >&2
  exit 1
fi
echo "installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
