#!/usr/bin/env bash
# Install nbp and its pinned dependencies into .venv (created if missing).
#   bash setup.sh               # runtime
#   bash setup.sh --dev         # + test tools (and Debian's chromium + chromedriver, as root)
#   bash setup.sh --keep-torch  # into the already active environment, leaving its torch alone
set -euo pipefail
cd "$(dirname "$0")"

dev=0 keep_torch=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --keep-torch) keep_torch=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --dev, --keep-torch)" >&2; exit 2 ;;
  esac
done

if [ "$keep_torch" = 1 ]; then
  python=$(command -v python)
  "$python" -c "import torch" 2>/dev/null || { echo "setup.sh --keep-torch: the active python has no torch" >&2; exit 1; }
  requirements=$(mktemp)
  grep -v '^torch==' requirements.txt > "$requirements"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  python=.venv/bin/python
  requirements=requirements.txt
fi

"$python" -m pip install --quiet --upgrade pip
"$python" -m pip install --quiet -r "$requirements"
if [ "$dev" = 1 ]; then
  "$python" -m pip install --quiet -r requirements-dev.txt
  # the browser test of `nbp play` drives Debian's chromium through its chromedriver
  if ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
    else
      echo "setup.sh --dev: no chromedriver, so the browser test of nbp play is skipped" \
           "(sudo apt-get install chromium chromium-driver)" >&2
    fi
  fi
fi
"$python" -m pip install --quiet --no-deps -e .
echo "nbp installed in $("$python" -c 'import sys; print(sys.prefix)'); run: $(dirname "$python")/nbp --help"
