#!/usr/bin/env bash
# The whole test suite: builds every test binary once, then runs them all at
# the same time (each test isolates itself: its own database, subject prefix
# and stream), and prints each binary's output when it is done. Extra
# arguments go to every test binary (e.g. a name filter, or --nocapture).
#
#   scripts/test.sh
#   scripts/test.sh hardening::        # only tests whose name contains it
set -uo pipefail
cd "$(dirname "$0")/.."

listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
if ! cargo test --locked --no-run --message-format=json-render-diagnostics >"$listing"; then
    echo "the tests do not build" >&2
    exit 101
fi
mapfile -t binaries < <(python3 - "$listing" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("profile", {}).get("test") and msg.get("executable"):
        print(msg["executable"])
PY
)
if [ "${#binaries[@]}" -eq 0 ]; then
    echo "no test binaries were built" >&2
    exit 101
fi

outputs=$(mktemp -d)
trap 'rm -f "$listing"; rm -rf "$outputs"' EXIT
pids=()
for i in "${!binaries[@]}"; do
    "${binaries[$i]}" "$@" >"$outputs/$i.log" 2>&1 &
    pids+=("$!")
done
status=0
for i in "${!binaries[@]}"; do
    if ! wait "${pids[$i]}"; then status=101; fi
    printf '\n==> %s\n' "$(basename "${binaries[$i]}")"
    cat "$outputs/$i.log"
done
exit "$status"
