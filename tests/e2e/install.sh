#!/usr/bin/env bash
# Install what the e2e suite (tests/e2e) needs; safe to run again (does nothing when present).
#   - Debian's chromium at /usr/bin/chromium (playwright cannot download browsers here)
#   - a colour emoji font, so that screenshots show the cards' emoji
#   - the Microsoft 365 Agents Playground, pinned by tests/e2e/playground/package-lock.json
#   - the playwright Python package, into $PYTHON's environment (default: python3 on PATH)
# Usage: tests/e2e/install.sh            PYTHON=/path/to/venv/bin/python tests/e2e/install.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
sudo=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi

if [ ! -x /usr/bin/chromium ]; then
    echo "e2e: installing chromium (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi

# Emoji as Teams shows them on cards (✅, ⚠️); without a colour emoji font the screenshots show boxes.
if ! fc-list 2>/dev/null | grep -qi "Noto Color Emoji"; then
    echo "e2e: installing fonts-noto-color-emoji (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fonts-noto-color-emoji
fi

command -v node >/dev/null && command -v npm >/dev/null || {
    echo "e2e: node and npm are required (Node.js 20 or later)" >&2; exit 1; }

lock="$here/playground/package-lock.json"
stamp="$here/playground/node_modules/.package-lock.json"
if [ ! -x "$here/playground/node_modules/.bin/agentsplayground" ] || [ "$lock" -nt "$stamp" ]; then
    echo "e2e: npm ci (Agents Playground)"
    (cd "$here/playground" && npm ci --no-audit --no-fund)
fi

if ! "$python" -c "import playwright.sync_api" 2>/dev/null; then
    echo "e2e: pip install playwright"
    "$python" -m pip install --quiet playwright
fi

echo "e2e: ready ($(/usr/bin/chromium --version 2>/dev/null | tail -1), playground $(node -p "require('$here/playground/node_modules/@microsoft/m365agentsplayground/package.json').version"), playwright $("$python" -c 'from importlib.metadata import version; print(version("playwright"))'))"
