#!/usr/bin/env bash
# Installs the Svix Python SDKs the compatibility test drives: the current one and an older
# generation with the pre-rename field names; beside the current one, the independent
# `standardwebhooks` verifier the ingest test checks forwarded webhooks with. Idempotent; the
# venvs live outside the clone.
set -euo pipefail
root="${KAIT_PY_SDK_DIR:-/var/tmp/kait-svix-py}"
for sdk in 2.9.1 1.45.0; do
  venv="$root-$sdk"
  packages=("svix==$sdk")
  probe="import svix"
  if [ "$sdk" = 2.9.1 ]; then
    packages+=("standardwebhooks==1.1.0")
    probe="import svix, standardwebhooks"
  fi
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "$probe" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
  fi
  echo "$venv/bin/python"
done
