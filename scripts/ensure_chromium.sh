#!/bin/sh
# Installs Debian's Chromium for the browser tests (tests/browser/) when it is missing.
# We use the distribution's browser rather than `playwright install`: it needs no download from
# a CDN, and apt keeps it patched. A no-op when /usr/bin/chromium already exists.
set -eu

CHROMIUM="${ANNOLOOP_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and apt-get is not available;" \
        "install Chromium and set ANNOLOOP_CHROMIUM to its path" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "ensure_chromium: installing chromium with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
