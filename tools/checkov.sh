#!/usr/bin/env bash
# Run checkov from its own venv, installing it there first if needed.
#
#   tools/checkov.sh --version
#   tools/checkov.sh -f manifests/rendered/production.yaml --framework kubernetes
#
# checkov's pins clash with the project's lock, so it never goes into .venv. Its venv is built
# once per machine, outside the work tree (every clone and CI run on the machine shares it, and
# no linter walks into it), from tools/checkov-requirements.txt (exact pins), and rebuilt when
# that file changes. CHECKOV_VENV moves it. checkov then runs offline: no policy download, no
# platform mapping, no telemetry.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/loanops/checkov-venv}"
requirements="$root/tools/checkov-requirements.txt"
stamp="$venv/.installed-$(grep -v '^#' "$requirements" | sha256sum | cut -c1-16)"

if [[ ! -f "$stamp" ]]; then
    # One installer at a time: the tests start several checkov runs at once.
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
fi
if [[ ! -f "$stamp" ]]; then
    echo "tools/checkov.sh: installing checkov into $venv (once per machine)" >&2
    rm -rf "$venv"
    uv="$root/.venv/bin/uv"
    if [[ -x "$uv" ]]; then
        # The project's pinned uv: fast, and it needs no python3-venv package.
        UV_PYTHON_DOWNLOADS=never "$uv" venv --quiet --python "${UV_PYTHON:-python3}" "$venv"
        "$uv" pip install --quiet --python "$venv/bin/python" --requirement "$requirements"
    else
        "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --requirement "$requirements"
    fi
    touch "$stamp"
fi
# Release the install lock before exec: checkov would otherwise inherit it and hold it for its
# whole run, while the other runs wait for it and this one blocks on a full stdout pipe.
exec 9>&-

export BC_SKIP_MAPPING=TRUE
export CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export ANONYMOUS_TELEMETRY=false
exec "$venv/bin/checkov" "$@"
