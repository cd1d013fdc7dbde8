#!/bin/sh
# Runs the tests natively with the Python of .venv: componentize-py writes the WIT bindings
# (the `wit_world` package) into .bindings/, whose imports only work inside the gateway, so the
# tests replace them (see tests/test_app.py).
set -eu
cd "$(dirname "$0")"
componentize_py=.venv/bin/componentize-py
if [ ! -x "$componentize_py" ]; then
    echo "no $componentize_py; set up once with:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
    exit 1
fi
rm -rf .bindings
"$componentize_py" -d wit -w checked-{{kind}} bindings .bindings
PYTHONPATH=.bindings:src .venv/bin/python -m unittest discover -s tests -v
