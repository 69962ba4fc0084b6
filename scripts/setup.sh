#!/usr/bin/env bash
# Set up everything actorbot needs on a fresh machine: a virtualenv with the project and
# its dev tools, and a CJK font so Chinese subtitles render as glyphs. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "setup: installing actorbot and its tools into .venv (first run takes a minute)…"
    log=.venv/install.log
    if ! { .venv/bin/python -m pip install --quiet --upgrade pip \
            && .venv/bin/python -m pip install --quiet -e ".[dev]"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "setup: installing the project failed (full log: $log)" >&2
        exit 1
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# Chinese subtitles need a CJK font; the preview renderer warns loudly without one.
if ! { command -v fc-list >/dev/null && [ -n "$(fc-list :lang=zh file 2>/dev/null)" ]; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing a CJK font (fonts-wqy-microhei)…"
        (apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1; }) \
            || echo "setup: could not install a CJK font; set ACTORBOT_PREVIEW__FONT_PATH to one" >&2
    else
        echo "setup: no CJK font found; install fonts-noto-cjk or fonts-wqy-microhei for Chinese subtitles" >&2
    fi
fi
