#!/usr/bin/env python3
"""Each crate's modules and the modules of its own each one imports.

    python3 scripts/module_graph.py [--check] [crate_dir ...]

Prints, per crate, every module with the modules it names through `crate::`,
`super::` or a child's name (`use batch::Next`). With --check, exits 1 when
two modules import each other, directly or through others. A module and its
own descendants are left out of the graph: a parent declares its children,
and children build on their parent's items, which is the tree itself, not a
cycle.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["common", "ingest", "registry", "processor", "query-api", "worker", "testkit", "benches"]

USE_PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)::\{([^;]*)\};", re.S)
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;", re.M)
USE_LOCAL = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?use\s+([a-z_0-9]+)::", re.M)


def module_of(src: Path, path: Path) -> tuple:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def modules(src: Path) -> dict:
    """Module path -> source text, for the library's tree (lib.rs and below)."""
    out = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel.parts[0] == "bin" or rel.name == "main.rs":
            continue
        out[module_of(src, path)] = path.read_text()
    return out


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


def resolve(mods: dict, start: tuple, segments: list) -> tuple:
    """The longest module named by `segments`, read from module `start`."""
    base = list(start)
    while segments and segments[0] in ("super", "self"):
        if segments.pop(0) == "super":
            base = base[:-1]
    path = tuple(base)
    best = path
    for s in segments:
        path = path + (s,)
        if path in mods:
            best = path
        else:
            break
    return best


def imports(mods: dict) -> dict:
    graph = {m: set() for m in mods}
    for m, text in mods.items():
        code = strip_comments(text)
        targets = []
        for root, rest in USE_PATH.findall(code):
            segs = [s for s in rest.split("::") if s and s != "{"]
            if root == "crate":
                targets.append(resolve(mods, (), segs))
            else:
                targets.append(resolve(mods, m, [root] + segs))
        for root, group in USE_GROUP.findall(code):
            for item in re.split(r",", group):
                segs = [s.strip() for s in item.split("::") if s.strip() and "{" not in s and "}" not in s]
                segs = [s.split(" as ")[0] for s in segs]
                if root == "crate":
                    targets.append(resolve(mods, (), segs))
                else:
                    targets.append(resolve(mods, m, [root] + segs))
        children = {m + (c,) for c in MOD_DECL.findall(code)}
        for first in USE_LOCAL.findall(code):
            if m + (first,) in children:
                targets.append(m + (first,))
        for t in targets:
            related = t[: len(m)] == m or m[: len(t)] == t
            if t in mods and not related:
                graph[m].add(t)
    return graph


def cycles(graph: dict) -> list:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def name(m: tuple) -> str:
    return "::".join(m) or "(root)"


def main(argv):
    check = "--check" in argv
    crates = [a for a in argv if not a.startswith("--")] or CRATES
    found = []
    for crate in crates:
        src = ROOT / crate / "src"
        graph = imports(modules(src))
        print(f"{crate}:")
        for m in sorted(graph):
            print(f"  {name(m)} -> {', '.join(name(t) for t in sorted(graph[m])) or '-'}")
        for group in cycles(graph):
            found.append((crate, group))
    for crate, group in found:
        print(f"cycle in {crate}: {' <-> '.join(name(m) for m in group)}", file=sys.stderr)
    return 1 if check and found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
