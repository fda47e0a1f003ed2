#!/usr/bin/env bash
# Prints, for each top-level module of src/, the other top-level modules its
# code imports (`crate::<module>` paths, grouped `crate::{a::…, b}` ones
# included; comments, string contents and `#[cfg(test)] mod …` modules,
# inline or in their own file, left out). docs/architecture.md says which
# arrows are allowed. Reads only.
#   scripts/imports.sh [repository]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
exec python3 - <<'PY'
import os
import re
import sys

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def blank(text):
    """The text with comments and the contents of string and char literals
    replaced by spaces (newlines kept), so that braces and `crate::` are
    only found in code."""
    out, i, n = [], 0, len(text)

    def keep_lines(s):
        return "".join(c if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(keep_lines(text[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and not (
            i and (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(keep_lines(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append('"' + keep_lines(text[i + 1:j - 1]) + '"')
            i = j
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}'), or a lifetime ('a).
            m = re.match(r"'(\\(u\{[0-9A-Fa-f]*\}|x[0-9A-Fa-f]{2}|.)|[^\\'])'", text[i:i + 12])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def closing(text, start):
    """The index just past the brace closing the one at `start`."""
    depth = 0
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


TEST_MOD = re.compile(
    r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([{;])"
)


def production(path, skipped):
    """The file's code without its test modules; a test module in its own
    file is added to `skipped`."""
    with open(path, encoding="utf-8") as f:
        text = blank(f.read())
    parts, at = [], 0
    for m in TEST_MOD.finditer(text):
        if m.start() < at:
            continue
        parts.append(text[at:m.start()])
        if m.group(2) == "{":
            at = closing(text, m.end() - 1)
        else:
            at = m.end()
            base = os.path.dirname(path)
            stem = os.path.basename(path)[:-3]
            if stem not in ("mod", "lib", "main"):
                base = os.path.join(base, stem)
            skipped.add(os.path.join(base, m.group(1) + ".rs"))
            skipped.add(os.path.join(base, m.group(1), "mod.rs"))
    parts.append(text[at:])
    return "".join(parts)


def group_heads(group):
    """The first segment of each path of a `{…}` group (without braces)."""
    heads, depth, item = [], 0, []
    for c in group + ",":
        if c == "," and depth == 0:
            m = IDENT.match("".join(item).strip())
            if m:
                heads.append(m.group(0))
            item = []
            continue
        depth += (c == "{") - (c == "}")
        item.append(c)
    return heads


def imported(code):
    names = set()
    for m in re.finditer(r"\bcrate\s*::\s*", code):
        rest = m.end()
        if code.startswith("{", rest):
            heads = group_heads(code[rest + 1:closing(code, rest) - 1])
        else:
            ident = IDENT.match(code, rest)
            heads = [ident.group(0)] if ident else []
        names.update(h for h in heads if re.fullmatch(r"[a-z_][a-z0-9_]*", h))
    return names - {"self", "super", "crate"}


for top in sorted(os.listdir("src")):
    path = os.path.join("src", top)
    name = top[:-3] if top.endswith(".rs") else top
    if name in ("lib", "main", "bin") or not (os.path.isdir(path) or top.endswith(".rs")):
        continue
    if os.path.isdir(path):
        files = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".rs")
        )
    else:
        files = [path]
    skipped, code = set(), {}
    for f in files:
        code[f] = production(f, skipped)
    # A test module's file, and every file of its own submodules, left out.
    dirs = tuple(s[: -len("/mod.rs")] + "/" if s.endswith("/mod.rs") else s[:-3] + "/" for s in skipped)
    deps = set()
    for f in files:
        if f not in skipped and not f.startswith(dirs or ("\0",)):
            deps |= imported(code[f])
    deps.discard(name)
    print(f"{name:<10} -> {''.join(d + ' ' for d in sorted(deps))}")
PY
