#!/usr/bin/env python3
"""Tables of the inputs and outputs of the Terraform under deploy/terraform, from the HCL itself.

    terraform-docs.py            rewrite the marked sections of deploy/terraform/README.md
    terraform-docs.py --check    exit 1 (and show a diff) when the README is stale
    terraform-docs.py --parse    only parse every .tf / .tfvars* file; print what was found

A marked section is
    <!-- terraform-docs:begin modules/doks-cluster -->
    ...generated, do not edit...
    <!-- terraform-docs:end -->
and holds the tables of the directory it names (relative to deploy/terraform).
Needs python-hcl2 (scripts/check-terraform.sh installs it into .tools/terraform-venv).
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import hcl2
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "deploy" / "terraform"
README = TERRAFORM / "README.md"
MARKED = re.compile(
    r"(<!-- terraform-docs:begin (?P<dir>[\w./-]+) -->\n)(?P<body>.*?)(<!-- terraform-docs:end -->)",
    re.S,
)
# Plain strings without quotes; expressions stay as "${...}".
OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def load_file(path):
    """The parsed content of one HCL file; a syntax error names the file and stops."""
    try:
        with open(path, encoding="utf-8") as handle:
            return hcl2.load(handle, serialization_options=OPTIONS)
    except Exception as err:  # python-hcl2 raises lark errors of several kinds
        raise SystemExit(f"{path.relative_to(ROOT)}: does not parse as HCL: {err}") from err


def load_dir(directory):
    """Blocks of every .tf file of one directory, merged by block type (as terraform does)."""
    merged = {}
    files = sorted(directory.glob("*.tf"))
    if not files:
        raise SystemExit(f"{directory.relative_to(ROOT)}: no .tf files")
    for path in files:
        for kind, blocks in load_file(path).items():
            merged.setdefault(kind, []).extend(blocks if isinstance(blocks, list) else [blocks])
    return merged


def named(blocks):
    """[{name: body}, ...] -> [(name, body)] in file order."""
    return [(name, body) for block in blocks for name, body in block.items()]


def variables(directory):
    return named(load_dir(directory).get("variable", []))


def outputs(directory):
    return named(load_dir(directory).get("output", []))


def expression(text):
    """'${list(string)}' -> 'list(string)'; a plain value is returned as it is."""
    if isinstance(text, str) and text.startswith("${") and text.endswith("}"):
        return text[2:-1]
    return text


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_default(body):
    if "default" not in body:
        return "required"
    value = body["default"]
    if isinstance(value, str) and not value.startswith("${"):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value, separators=(', ', ': '))}`"
    return f"`{expression(value)}`"


def tables(directory):
    lines = ["Inputs:", "", "| name | description | type | default | validated |", "|---|---|---|---|---|"]
    for name, body in variables(directory):
        checks = len(body.get("validation", []))
        lines.append(
            f"| `{name}` | {cell(body.get('description', ''))} | `{cell(expression(body.get('type', 'any')))}` "
            f"| {cell(render_default(body))} | {'yes' if checks else ''} |"
        )
    lines += ["", "Outputs:", "", "| name | description | sensitive |", "|---|---|---|"]
    for name, body in outputs(directory):
        sensitive = "yes" if body.get("sensitive") is True else ""
        lines.append(f"| `{name}` | {cell(body.get('description', ''))} | {sensitive} |")
    return "\n".join(lines) + "\n"


def missing_descriptions(directory):
    return [
        f"{directory.relative_to(ROOT)}: {kind} {name} has no description"
        for kind, items in (("variable", variables(directory)), ("output", outputs(directory)))
        for name, body in items
        if not body.get("description")
    ]


def regenerate(text):
    problems = []

    def replace(match):
        directory = TERRAFORM / match.group("dir")
        if not directory.is_dir():
            problems.append(f"README marks {match.group('dir')}, which is not a directory")
            return match.group(0)
        problems.extend(missing_descriptions(directory))
        return match.group(1) + tables(directory) + match.group(4)

    new, count = MARKED.subn(replace, text)
    if count == 0:
        problems.append("README.md has no terraform-docs:begin/end section")
    return new, problems


def parse_all():
    files = sorted(
        p for p in TERRAFORM.rglob("*") if p.is_file() and (p.suffix == ".tf" or ".tfvars" in p.name or p.name.endswith(".hcl.example"))
    )
    for path in files:
        blocks = load_file(path)
        print(f"parsed {path.relative_to(ROOT)}: {', '.join(f'{k} x{len(v) if isinstance(v, list) else 1}' for k, v in blocks.items())}")
    print(f"{len(files)} files parse as HCL")
    return 0 if files else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail when README.md is stale")
    mode.add_argument("--parse", action="store_true", help="only parse every HCL file")
    args = parser.parse_args()
    if args.parse:
        return parse_all()
    text = README.read_text(encoding="utf-8")
    new, problems = regenerate(text)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    if args.check:
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), "README.md", "README.md (generated)"))
            print("deploy/terraform/README.md is stale: run scripts/terraform-docs.py", file=sys.stderr)
            return 1
        print("deploy/terraform/README.md tables are up to date")
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print("rewrote the tables of deploy/terraform/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
