#!/usr/bin/env python3
"""Docs that cannot go stale unseen: README.md and docs/*.md checked against the tree.

Fails (exit 1, one line per finding) when a doc names, in backticks (inline or fenced):
  - a path under crates/, docs/, scripts/, migrations/, fuzz/ or .ci/ that does not exist
    (`<name>` in a path stands for any one component; ALLOWED_MISSING lists paths made at run time);
  - a snake_case name of five words or more (a test's or a function's) that appears nowhere in the
    code (crates/, scripts/, fuzz/, .ci/, and migrations/ for index names); FOREIGN_NAMES lists
    the few that belong to other programs.
It also checks that docs/operations.md documents every environment variable the server reads
(`VARIABLES` in crates/server/src/config.rs, the list `--help` prints), and follows the docs' relative links: the file must exist, and an anchor must be one of its
headings (as GitHub makes them). Needs only python3; reads the tree once, so it takes well under a second.
"""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
CODE_DIRS = ["crates", "scripts", "fuzz", ".ci", "migrations"]
PATH_PREFIXES = ("crates/", "docs/", "scripts/", "migrations/", "fuzz/", ".ci/")
# Paths that only exist once something has run (cargo fuzz writes its crashes there).
ALLOWED_MISSING = {"fuzz/artifacts/"}
# Long snake_case names the docs quote from other programs.
FOREIGN_NAMES = {"proxy_add_x_forwarded_for"}  # nginx's variable, in the proxy setup

CONFIG = "crates/server/src/config.rs"
OPERATIONS = "docs/operations.md"
PATH_RE = re.compile(r"(?<![\w./-])(?:\./)?((?:crates|docs|scripts|migrations|fuzz|\.ci)/[\w./<>*-]*)")
# Five lowercase words or more joined by underscores, not part of a longer word or path.
SNAKE_RE = re.compile(r"(?<![\w])[a-z][a-z0-9]*(?:_[a-z0-9]+){4,}(?![\w])")
INLINE_RE = re.compile(r"(`+)(.+?)\1", re.S)
FENCE_RE = re.compile(r"^\s*(```|~~~)")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")


def code_spans(text):
    """Yield (line number, content) of every fenced block line and inline code span."""
    outside = []
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE_RE.match(line)
        if fence:
            if m and m.group(1) == fence:
                fence = None
            else:
                yield number, line
            outside.append("")
        elif m:
            fence = m.group(1)
            outside.append("")
        else:
            outside.append(line)
    prose = "\n".join(outside)
    for m in INLINE_RE.finditer(prose):
        yield prose.count("\n", 0, m.start()) + 1, m.group(2)


def path_exists(path):
    path = path.rstrip(".,;:")
    if path in ALLOWED_MISSING or any(path.startswith(a) for a in ALLOWED_MISSING):
        return True
    # `<target>` and `*` stand for any one path component.
    pattern = re.sub(r"<[^>/]*>", "*", path)
    if "*" in pattern:
        return bool(glob.glob(os.path.join(ROOT, pattern)))
    return os.path.exists(os.path.join(ROOT, path))


def anchors(doc):
    """The anchors GitHub gives the headings of a markdown file."""
    seen = {}
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        text = re.sub(r"^(```|~~~).*?^\1", "", f.read(), flags=re.S | re.M)
    for heading in re.findall(r"^#+\s+(.*?)\s*#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def link_finding(doc, target):
    if re.match(r"[a-z]+:", target):
        return None
    path, _, anchor = target.partition("#")
    path = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
    if not os.path.exists(os.path.join(ROOT, path)):
        return f"no such file: {target}"
    if anchor and path.endswith(".md") and anchor not in anchors(path):
        return f"no such heading: {target}"
    return None


def undocumented_variables():
    with open(os.path.join(ROOT, CONFIG), encoding="utf-8") as f:
        table = re.search(r"pub const VARIABLES: &\[\(&str, &str\)\] = &\[(.*?)\n\];", f.read(), re.S)
    if not table:
        return [f"{CONFIG}: no VARIABLES table found"]
    with open(os.path.join(ROOT, OPERATIONS), encoding="utf-8") as f:
        documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", f.read(), re.M))
    return [
        f"{OPERATIONS}: the configuration table lacks `{name}` (read by the server: {CONFIG})"
        for name in re.findall(r'\(\s*"([A-Z0-9_]+)"\s*,', table.group(1))
        if name not in documented
    ]


def code_words():
    words = set()
    for top in CODE_DIRS:
        for directory, dirs, files in os.walk(os.path.join(ROOT, top)):
            # Build output and fuzzing inputs are not code.
            dirs[:] = [d for d in dirs if d not in ("target", "artifacts", "corpus", "coverage", "regressions")]
            for name in files:
                try:
                    with open(os.path.join(directory, name), encoding="utf-8") as f:
                        words.update(re.findall(r"\w+", f.read()))
                except (UnicodeDecodeError, OSError):
                    continue
    return words


def main():
    words = code_words()
    findings = []
    for doc in DOCS:
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            text = f.read()
        for number, line in enumerate(text.splitlines(), 1):
            for m in LINK_RE.finditer(line):
                finding = link_finding(doc, m.group(1))
                if finding:
                    findings.append(f"{doc}:{number}: {finding}")
        for line, span in code_spans(text):
            for m in PATH_RE.finditer(span):
                if m.group(1).startswith(PATH_PREFIXES) and not path_exists(m.group(1)):
                    findings.append(f"{doc}:{line}: no such path: {m.group(1)}")
            for m in SNAKE_RE.finditer(span):
                if m.group(0) not in words and m.group(0) not in FOREIGN_NAMES:
                    findings.append(f"{doc}:{line}: named nowhere in the code: {m.group(0)}")
    findings += undocumented_variables()
    for finding in findings:
        print(finding)
    if findings:
        print(f"check-docs: {len(findings)} stale reference(s) in the docs")
        return 1
    print(f"check-docs: {len(DOCS)} docs, every path and long name found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
