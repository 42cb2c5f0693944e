#!/usr/bin/env python3
"""Fails when the modules of any crate form a cycle.

A module depends on another when its source names it through `crate::`,
`super::` or a `use` of either. Submodules belong to their parent for this
check only in the direction parent -> child (declaring `mod x;` is not a
dependency of x on its parent). Prints every cycle found and exits 1, or
prints one line per crate and exits 0.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates")


def modules(src):
    """Maps module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("lib", "main") and len(parts) == 1:
                parts = []
            elif parts[-1] == "mod":
                parts = parts[:-1]
            out[tuple(parts)] = os.path.join(dirpath, f)
    return out


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    # Test modules may reach anywhere: a cycle through tests is not one.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests", text)
    return text[: cut.start()] if cut else text


def resolve(mods, here, path):
    """The longest known module that `path` (list of names) names."""
    best = None
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            best = tuple(path[:n])
            break
    return best


def deps(mods, here, text):
    found = set()
    # crate::a::b and super::a
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
        names = m.group(2).split("::")[1:]
        base = [] if m.group(1) == "crate" else list(here[:-1])
        target = resolve(mods, here, base + names)
        if target is not None and target != here and target != ():
            found.add(target)
    # use crate::{a, b::c}
    for m in re.finditer(r"\buse\s+(crate|super)::\{([^;]*)\}", text, flags=re.S):
        base = [] if m.group(1) == "crate" else list(here[:-1])
        for item in re.split(r"[,{}\s]+", m.group(2)):
            item = item.split("::")
            if item and item[0] and item[0] != "self":
                target = resolve(mods, here, base + item)
                if target is not None and target != here and target != ():
                    found.add(target)
    # A module never depends on its own ancestors for this check: children
    # use the parent's items all the time; what matters is siblings.
    return {t for t in found if here[: len(t)] != t}


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    bad = 0
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        mods = modules(src)
        graph = {}
        for m, f in mods.items():
            with open(f, encoding="utf-8") as fh:
                graph[m] = deps(mods, m, strip(fh.read()))
        # A dependency on a submodule counts as one on the module holding it
        # at the sibling level, so a -> b::c and b::c -> a is a cycle a <-> b.
        flat = {}
        for m, ds in graph.items():
            for d in ds:
                # lift both ends to their common parent's children
                i = 0
                while i < min(len(m), len(d)) and m[i] == d[i]:
                    i += 1
                a, b = m[: i + 1], d[: i + 1]
                if a != b:
                    flat.setdefault(a, set()).add(b)
        found = cycles(flat)
        if found:
            bad += 1
            for c in found:
                names = sorted("::".join(x) or "(root)" for x in c)
                print(f"{crate}: module cycle: {' <-> '.join(names)}")
        else:
            print(f"{crate}: {len(mods)} modules, no cycle")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
