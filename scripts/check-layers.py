#!/usr/bin/env python3
"""Enforces tally's module dependency rule (crates/tally/src/lib.rs, docs/architecture.md).

Each top-level module of the crate may import (`crate::<module>`) only the modules listed for it
below: leaves first, then shared infrastructure, then the features, then the process shell. A
feature never imports another feature, and no module imports one that imports it back. Prints
the import graph with --print. Exit 1 on any import outside the rule.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "crates" / "tally" / "src"

LEAVES = {"config": set(), "metrics": set(), "store": set()}
INFRASTRUCTURE = {
    "telemetry": {"config"},
    "trace": {"config"},
    "listener": {"config", "metrics"},
    "redis": {"config", "metrics", "store"},
    "postgres": {"config", "store"},
    "http": {"config", "listener", "metrics", "store", "telemetry", "trace"},
}
BELOW_FEATURES = set(LEAVES) | set(INFRASTRUCTURE)
FEATURES = {name: BELOW_FEATURES - {"telemetry", "listener"} for name in ("counters", "guestbook", "fib")}
SHELL = {
    "app": BELOW_FEATURES | set(FEATURES),
    "web": BELOW_FEATURES | {"app", "counters", "guestbook"},
    "check": BELOW_FEATURES,
    "cli": BELOW_FEATURES | set(FEATURES) | {"app", "web", "check"},
}
ALLOWED = {**LEAVES, **INFRASTRUCTURE, **FEATURES, **SHELL}


def module_of(path: pathlib.Path) -> str | None:
    rel = path.relative_to(SRC)
    if rel.parts[0] in ("lib.rs", "main.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def imports() -> dict[str, dict[str, set[str]]]:
    """module -> imported module -> files that import it."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        module = module_of(path)
        if module is None:
            continue
        graph.setdefault(module, {})
        text = path.read_text()
        # `use crate::{a, b::c}` as well as `crate::a::...` anywhere in the code.
        names = set(re.findall(r"\bcrate::([a-z_]+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            names |= set(re.findall(r"(?:^|,)\s*([a-z_]+)", group))
        for name in names - {module}:
            graph[module].setdefault(name, set()).add(str(path.relative_to(SRC)))
    return graph


def main() -> int:
    graph = imports()
    problems = []
    for module, deps in sorted(graph.items()):
        if module not in ALLOWED:
            problems.append(f"{module}: a new top-level module; give it a place in scripts/check-layers.py")
            continue
        for dep, files in sorted(deps.items()):
            if dep not in ALLOWED[module]:
                problems.append(f"{module} imports {dep} ({', '.join(sorted(files))}): not allowed by the layer rule")
    if "--print" in sys.argv:
        for module, deps in sorted(graph.items()):
            print(f"{module:10} -> {' '.join(sorted(deps)) or '(nothing)'}")
    for problem in problems:
        print(f"check-layers: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
