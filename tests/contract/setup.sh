#!/usr/bin/env bash
# Create (once) the Python venv used by the contract checks and print the path
# of its python on stdout. Everything else goes to stderr, so callers can do:
#
#   PY=$(tests/contract/setup.sh) && "$PY" tests/contract/validate.py schemas
#
# The venv lives at ${VX_DATA_DIR:-<repo>/var}/venv. Requirements are
# (re)installed only when tests/contract/requirements.txt changed since the
# last successful install (sha256 stamp inside the venv), so a second run does
# no network access and takes well under a second. Safe to run concurrently
# (serialised with flock when available). Set PYTHON to choose the interpreter
# that creates the venv (default: python3, must be >= 3.9).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
data_dir=${VX_DATA_DIR:-$repo/var}
venv=$data_dir/venv
req=$here/requirements.txt
stamp=$venv/.vx-requirements.sha256
py=${PYTHON:-python3}

log() { printf 'contract setup: %s\n' "$*" >&2; }

mkdir -p "$data_dir"

# Serialise concurrent runs (e.g. parallel make targets) on the same venv.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$data_dir/.venv.lock"
    flock 9
fi

want=$(sha256sum "$req" | cut -d' ' -f1)

# Fast path: venv present, its python runs, requirements unchanged.
if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]] \
   && "$venv/bin/python" -c '' >/dev/null 2>&1; then
    printf '%s\n' "$venv/bin/python"
    exit 0
fi

# A venv whose interpreter no longer runs (e.g. the base python was removed)
# is recreated; only ever remove a directory that really is a venv.
if [[ -e $venv ]] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    if [[ -f $venv/pyvenv.cfg ]]; then
        log "venv at $venv is broken; recreating it"
        rm -rf -- "$venv"
    else
        log "error: $venv exists but is not a Python venv; move it away"
        exit 1
    fi
fi

if [[ ! -x $venv/bin/python ]]; then
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' >/dev/null 2>&1; then
        log "error: '$py' is missing or older than Python 3.9 (set PYTHON=...)"
        exit 1
    fi
    log "creating venv at $venv"
    if ! "$py" -m venv "$venv" >&2; then
        log "error: '$py -m venv' failed (on Debian: apt-get install python3-venv)"
        rm -rf -- "$venv"
        exit 1
    fi
    rm -f -- "$stamp"
fi

log "installing $(basename "$req") into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input -r "$req" >&2
printf '%s\n' "$want" >"$stamp"

printf '%s\n' "$venv/bin/python"
