#!/usr/bin/env python3
"""Prints the Markdown table of the Helm chart's values from deploy/helm/tally/values.yaml.

A value is documented by the `# -- ` comment block right above its key (continued by the `#`
lines that follow). A documented key whose default is a map is one row (its whole default is
shown); undocumented maps are descended into. Every leaf must be documented: the script fails
otherwise. scripts/check-chart.sh compares the output with the table in docs/kubernetes.md
(between the values-table markers) and --update rewrites it.

    values-table.py [values.yaml]                 print the table
    values-table.py --replace DOC [values.yaml]   rewrite the table inside DOC
"""
import json
import re
import sys

import yaml  # PyYAML, installed with yamllint in .tools/venv

START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"


def documented_keys(path):
    """{dotted.key: description} from the `# --` comments of values.yaml."""
    docs, stack, pending = {}, [], None
    for line in open(path, encoding="utf-8"):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if stripped.startswith("# -- "):
            pending = stripped[4:].strip()
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending += " " + stripped[1:].strip()
            continue
        m = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if not m:
            if stripped == "":
                pending = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        key = ".".join(k for _, k in stack)
        if pending is not None:
            docs[key] = pending
        pending = None
    return docs


def rows(values, docs, prefix=""):
    out, missing = [], []
    for key, default in values.items():
        full = prefix + key
        if full in docs:
            out.append((full, default, docs[full]))
        elif isinstance(default, dict) and default:
            r, m = rows(default, docs, full + ".")
            out += r
            missing += m
        else:
            missing.append(full)
    return out, missing


def cell(default):
    text = json.dumps(default, separators=(", ", ": "))
    return "`" + text.replace("|", "\\|") + "`"


def table(values_path):
    values = yaml.safe_load(open(values_path, encoding="utf-8"))
    r, missing = rows(values, documented_keys(values_path))
    if missing:
        sys.exit("values without a '# --' description: " + ", ".join(missing))
    lines = ["| Value | Default | Description |", "| --- | --- | --- |"]
    for key, default, desc in r:
        lines.append(f"| `{key}` | {cell(default)} | {desc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv):
    if argv and argv[0] == "--replace":
        doc = argv[1]
        values_path = argv[2] if len(argv) > 2 else "deploy/helm/tally/values.yaml"
        text = open(doc, encoding="utf-8").read()
        a, b = text.index(START) + len(START), text.index(END)
        open(doc, "w", encoding="utf-8").write(text[:a] + "\n" + table(values_path) + text[b:])
        return
    sys.stdout.write(table(argv[0] if argv else "deploy/helm/tally/values.yaml"))


if __name__ == "__main__":
    main(sys.argv[1:])
