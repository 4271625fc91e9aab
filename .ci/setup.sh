#!/usr/bin/env bash
# Create .venv and install the lab with the versions verified offline (constraints.txt keeps torch
# on the CPU build from the local wheel). Installs Debian's WordNet when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ ! -d /usr/share/wordnet ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null) \
    || echo "warning: could not install WordNet (wordnet-base wordnet-sense-index); WordNet threat models will be unavailable" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=24"
.venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,notebooks,textattack,ray,pyterrier]"
touch .venv/bin/ranklab
