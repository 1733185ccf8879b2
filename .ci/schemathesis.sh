#!/usr/bin/env bash
# Prints the path of a working `schemathesis` executable, installing it from PyPI first
# when there is none on PATH. Idempotent. Everything but the path goes to stderr, so that
# `.ci/run` can do: export SLUICE_TEST_SCHEMATHESIS="$(.ci/schemathesis.sh)"
set -euo pipefail

works() { [ -n "$1" ] && "$1" --version >/dev/null 2>&1; }

found="$(command -v schemathesis || true)"
if ! works "$found"; then
    echo "CI: schemathesis is missing; installing it from PyPI" >&2
    python3 -m pip install -q schemathesis >&2
    hash -r
    found="$(command -v schemathesis || true)"
fi
# A pip install may land outside PATH (a user install, a pyenv version without a shim yet):
# look beside the interpreter's scripts too.
if ! works "$found"; then
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
               "$(python3 -m site --user-base)/bin"; do
        if works "$dir/schemathesis"; then found="$dir/schemathesis"; break; fi
    done
fi
works "$found" || { echo "CI: no working schemathesis after installing it" >&2; exit 1; }
# A pyenv shim depends on the directory it runs in; hand on the real executable.
if command -v pyenv >/dev/null && [[ "$found" == */shims/* ]]; then
    found="$(pyenv which schemathesis 2>/dev/null || echo "$found")"
fi
echo "$found"
