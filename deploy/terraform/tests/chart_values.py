#!/usr/bin/env python3
"""The values the tally-release module passes to helm_release pass the chart's checks.

For the module's own defaults and for every example that calls the module, this evaluates the
module's `chart_values` local with the inputs the caller gives (the example's variables, its
terraform.tfvars.example, the files it reads), adds the caller's extra_values, and checks:
  - the values merged over the chart's values.yaml, as helm merges them, pass values.schema.json;
  - `helm lint --strict` and `helm template` accept the same values files;
  - each input passes the module's own regex / contains validations where those can be read;
  - a copy with a wrong value is rejected by the schema and by helm (so this test can fail).
Only literals, var.* references and file("${path.module}/...") are evaluated; anything else is
an error, so a change to the module that this test cannot follow makes it fail, not pass.

    chart_values.py HELM    (scripts/check-terraform.sh runs it with the venv's python)
"""

import copy
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[3]
TERRAFORM = ROOT / "deploy" / "terraform"
MODULE = TERRAFORM / "modules" / "tally-release"
CHART = ROOT / "deploy" / "helm" / "tally"
WIRING = "${concat([yamlencode(local.chart_values)], var.extra_values)}"
VAR_REF = re.compile(r"^\$\{var\.([a-z0-9_]+)\}$")
FILE_REF = re.compile(r'^\$\{file\("\$\{path\.module\}/([\w./-]+)"\)\}$')
REGEX_CHECK = re.compile(r'^\$\{can\(regex\("((?:[^"\\]|\\.)*)", var\.([a-z0-9_]+)\)\)\}$')
CONTAINS_CHECK = re.compile(r'^\$\{contains\(\[([^\]]*)\], var\.([a-z0-9_]+)\)\}$')

_spec = importlib.util.spec_from_file_location("terraform_docs", ROOT / "scripts" / "terraform-docs.py")
docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docs)


class Unevaluable(Exception):
    pass


def resolve(value, scope, where):
    """A parsed HCL value with var.* replaced from scope (and files read relative to where)."""
    if isinstance(value, dict):
        return {k: resolve(v, scope, where) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, scope, where) for v in value]
    if isinstance(value, str) and "${" in value:
        if m := VAR_REF.match(value):
            if m.group(1) not in scope:
                raise Unevaluable(f"{where}: var.{m.group(1)} has no value")
            return scope[m.group(1)]
        if m := FILE_REF.match(value):
            return (where / m.group(1)).read_text(encoding="utf-8")
        raise Unevaluable(f"{where.relative_to(ROOT)}: cannot evaluate {value}")
    return value


def defaults(directory):
    return {name: body["default"] for name, body in docs.variables(directory) if "default" in body}


def module_inputs(caller_dir, args):
    """The module's variables as a caller sets them."""
    scope = defaults(caller_dir)
    tfvars = caller_dir / "terraform.tfvars.example"
    if tfvars.exists():
        scope.update(docs.load_file(tfvars))
    inputs = defaults(MODULE)
    inputs.update({k: resolve(v, scope, caller_dir) for k, v in args.items() if k != "source"})
    declared = {name for name, _ in docs.variables(MODULE)}
    unknown = set(inputs) - declared
    missing = declared - set(inputs)
    if unknown or missing:
        raise Unevaluable(f"{caller_dir.relative_to(ROOT)}: unknown inputs {sorted(unknown)}, missing {sorted(missing)}")
    return inputs


def callers():
    """(name, module inputs) for the module's defaults and each example that calls it."""
    yield "module defaults (image_repository = tally)", module_inputs(MODULE, {"image_repository": "tally"})
    for example in sorted((TERRAFORM / "examples").iterdir()):
        for name, args in docs.named(docs.load_dir(example).get("module", [])):
            if args.get("source") == "../../modules/tally-release":
                yield f"examples/{example.name} (module.{name})", module_inputs(example, args)


def validation_problems(inputs):
    """Inputs that fail a module validation of the forms can(regex(...)) or contains([...])."""
    problems = []
    for name, body in docs.variables(MODULE):
        for rule in body.get("validation", []):
            condition = rule["condition"]
            if m := REGEX_CHECK.match(condition):
                pattern = m.group(1).encode().decode("unicode_escape")
                if m.group(2) == name and not re.search(pattern, str(inputs[name])):
                    problems.append(f"{name} = {inputs[name]!r} fails {condition}")
            elif m := CONTAINS_CHECK.match(condition):
                allowed = [s.strip().strip('"') for s in m.group(1).split(",")]
                if m.group(2) == name and inputs[name] not in allowed:
                    problems.append(f"{name} = {inputs[name]!r} is not one of {allowed}")
    return problems


def helm_merge(base, overlay):
    """helm's values merge: maps merge key by key, null deletes, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def helm(helm_bin, verb, files):
    args = [helm_bin, verb]
    if verb == "template":
        args.append("tally")
    args += [str(CHART), "--namespace", "tally"]
    if verb == "lint":
        args.append("--strict")
    for f in files:
        args += ["--values", str(f)]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def check_caller(label, inputs, helm_bin, validator, chart_defaults, tmp):
    failures = []
    local = docs.load_dir(MODULE)["locals"][0]["chart_values"]
    documents = [resolve(local, inputs, MODULE)] + [yaml.safe_load(doc) or {} for doc in inputs["extra_values"]]
    merged = chart_defaults
    for doc in documents:
        merged = helm_merge(merged, doc)
    errors = sorted(validator.iter_errors(merged), key=str)
    failures += [f"schema: {'/'.join(map(str, e.path))}: {e.message}" for e in errors]
    failures += [f"module validation: {p}" for p in validation_problems(inputs)]

    files = []
    for i, doc in enumerate(documents):
        path = tmp / f"{re.sub(r'[^a-z0-9]+', '-', label.lower())}-{i}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        files.append(path)
    for verb in ("lint", "template"):
        result = helm(helm_bin, verb, files)
        if result.returncode != 0:
            failures.append(f"helm {verb}: {(result.stdout + result.stderr).strip()[-800:]}")
    rendered = helm(helm_bin, "template", files).stdout
    image = inputs["image_repository"] + (f"@{inputs['image_digest']}" if inputs["image_digest"] else "")
    if f"image: {image}" not in rendered and f'image: "{image}' not in rendered:
        failures.append(f"the rendered chart does not run the image {image}")

    # The same values with one wrong setting must be refused by both checks.
    broken = helm_merge(merged, {"image": {"pullPolicy": "Sometimes"}})
    if validator.is_valid(broken):
        failures.append("the schema accepted image.pullPolicy: Sometimes")
    wrong = tmp / "wrong.yaml"
    wrong.write_text("image:\n  pullPolicy: Sometimes\n", encoding="utf-8")
    if helm(helm_bin, "lint", files + [wrong]).returncode == 0:
        failures.append("helm lint accepted image.pullPolicy: Sometimes")

    print(f"{'FAIL' if failures else 'ok  '}  {label}: {len(documents)} values document(s), image {image}")
    for failure in failures:
        print(f"      {failure}")
    return not failures


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: chart_values.py HELM")
    helm_bin = sys.argv[1]
    resources = dict(docs.named(docs.load_dir(MODULE)["resource"]))
    release = resources["helm_release"]["this"]
    if release.get("values") != WIRING:
        raise SystemExit(f"helm_release.this.values is {release.get('values')!r}; this test reads {WIRING}")
    schema = yaml.safe_load((CHART / "values.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, inputs in callers():
            results.append(check_caller(label, inputs, helm_bin, validator, chart_defaults, Path(tmp)))
    print(f"{sum(results)} of {len(results)} callers' values pass values.schema.json and helm lint --strict")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Unevaluable as err:
        print(f"FAIL  {err}")
        sys.exit(1)
