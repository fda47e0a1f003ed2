#!/usr/bin/env bash
# Prints, for each top-level module of src/, the other top-level modules its
# code imports (`crate::<module>` paths; comments and #[cfg(test)] modules
# left out). docs/architecture.md says which arrows are allowed.
#   scripts/imports.sh [repository]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
for path in src/*; do
    name=$(basename "$path" .rs)
    case "$name" in lib | main | bin) continue ;; esac
    if [ -d "$path" ]; then files=$(find "$path" -name '*.rs' | sort); else files=$path; fi
    deps=$(for f in $files; do
        # Production code only: a file's lines before its test module.
        awk '/^#\[cfg\(test\)\]/ { exit } { print }' "$f"
    done | sed 's://.*$::' | grep -oE 'crate::[a-z_]+' | sed 's/crate:://' | sort -u | grep -vx "$name" | tr '\n' ' ' || true)
    printf '%-10s -> %s\n' "$name" "$deps"
done
