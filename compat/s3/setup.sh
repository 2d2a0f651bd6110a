#!/usr/bin/env bash
# Installs moto's server, the S3-compatible server the attachment tests run Kait's S3 blob
# store against (tests/it/attachments_s3.rs starts it on 127.0.0.1). Idempotent; the venv
# lives outside the clone. Prints the server's path.
set -euo pipefail
venv="${KAIT_MOTO_DIR:-/var/tmp/kait-moto}"
version=5.1.18
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c "import moto; assert moto.__version__ == '$version'" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version"
fi
echo "$venv/bin/moto_server"
