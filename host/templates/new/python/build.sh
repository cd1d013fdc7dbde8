#!/bin/sh
# Builds dist/{{name}}.wasm with componentize-py (pinned in requirements.txt, installed in
# .venv): the module `app` in src/ against the world `checked-{{kind}}` of the gateway's WIT
# (wit/gateway.wit), so the plugin exports `request-{{kind}}` and `config-check`.
set -eu
cd "$(dirname "$0")"
componentize_py=.venv/bin/componentize-py
if [ ! -x "$componentize_py" ]; then
    echo "no $componentize_py; set up once with:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
    exit 1
fi
mkdir -p dist
"$componentize_py" -d wit -w checked-{{kind}} componentize -p src app -o dist/{{name}}.wasm
