#!/usr/bin/env bash
# The chart's offline tests (helm/rookery/tests/test_chart.py) in their own
# virtualenv, target/chart-venv (or $CHART_VENV), made or brought up to date
# from requirements.txt. Needs /usr/bin/python3 (3.11+) with venv support
# (Debian: python3-venv) and PyPI. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../../.."
venv="${CHART_VENV:-target/chart-venv}"
req=helm/rookery/tests/requirements.txt
stamp="$venv/.requirements"
if ! [ -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$req"
  cp "$req" "$stamp"
fi
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest helm/rookery/tests -q -p no:cacheprovider "$@"
