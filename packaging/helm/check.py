#!/usr/bin/env python3
"""Checks the macronode chart offline, with Helm's own engine (PyPI
helm-python-sdk) and kubernetes-validate:

- `helm lint --strict` for the default values and every ci/*.yaml;
- values.schema.json (and the templates' own checks) refuse bad values;
- every rendered manifest passes `kubernetes-validate --strict`; the
  prometheus-operator kinds, which it has no schema for, are checked here;
- the pods are what the runbook promises: probes on the health plane,
  non-root, read-only root, no capabilities, seccomp, a grace period
  longer than the drain, a config checksum that rolls them; Services
  select pods and name ports that exist;
- each ConfigMap's TOML, with the environment the chart gives the
  container, passes `macronode config validate` (micronode for that
  profile): a chart can never ship a config the binary refuses;
- docs/RUNBOOK.md's table of values is what values.yaml says
  (`--write-docs` rewrites it).

Usage: check.py --bin-dir DIR [--write-docs]
"""

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

import helm_python as helm
from helm_python.logging import disable_logging

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "macronode")
ROOT = os.path.dirname(os.path.dirname(HERE))
RUNBOOK = os.path.join(ROOT, "docs", "RUNBOOK.md")
BEGIN, END = "<!-- helm-values:begin -->", "<!-- helm-values:end -->"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
CHART_COPY = CHART

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def value_sets():
    sets = [("default", None)]
    for f in sorted(os.listdir(os.path.join(CHART, "ci"))):
        if f.endswith(".yaml"):
            with open(os.path.join(CHART, "ci", f)) as fh:
                sets.append((f"ci/{f}", yaml.safe_load(fh) or {}))
    return sets


def render(chart, values):
    out = chart.render(values, name="rel", namespace="ns", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                docs.append((path, d))
    return docs


def merged(chart, values):
    return chart.merge_values(values) if values else chart.values


def check_lint(label, values):
    rep = helm.lint(CHART_COPY, values, strict=True)
    bad = [m for m in rep.get("messages", []) if m.get("severity", 0) >= 2]
    if rep.get("errors") or bad:
        fail(f"{label}: helm lint --strict: {rep.get('errors')} {bad}")


def check_refusals(chart):
    """Values a user could type that must not render."""
    bad = [
        ("profile nano", {"profile": "nano"}),
        ("two stateful nodes", {"node": {"replicas": 2}}),
        ("negative gateways", {"gateway": {"replicas": -1}}),
        ("unknown role", {"node": {"roles": ["storage", "omnigate"]}}),
        ("unknown key", {"replica": 3}),
        ("short write token", {"auth": {"writeTokens": ["short"]}}),
        ("grace not above the drain", {"drainDeadlineSeconds": 30, "terminationGracePeriodSeconds": 30}),
        ("gateways with nothing to reach", {"gateway": {"replicas": 2}, "node": {"roles": ["registry", "overlay"]}}),
        ("bad volume size", {"node": {"persistence": {"size": "lots"}}}),
    ]
    for label, values in bad:
        try:
            chart.validate_schema(merged(chart, values))
            chart.render(values, name="rel", namespace="ns")
        except helm.HelmError as e:
            print(f"  refused ({label}): {' '.join(str(e).split())[:160]}")
            continue
        fail(f"values accepted that must be refused: {label} {values}")


def check_operator_kind(label, d, docs):
    kind, spec = d["kind"], d.get("spec", {})
    if d.get("apiVersion") != "monitoring.coreos.com/v1":
        fail(f"{label}: {kind} apiVersion {d.get('apiVersion')}")
    if kind == "ServiceMonitor":
        sel = spec["selector"]["matchLabels"]
        ports = spec["endpoints"]
        targets = [
            s for _, s in docs
            if s["kind"] == "Service" and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
        ]
        if not targets:
            fail(f"{label}: the ServiceMonitor selects no Service")
        for s in targets:
            names = {p["name"] for p in s["spec"]["ports"]}
            for e in ports:
                if e["port"] not in names:
                    fail(f"{label}: ServiceMonitor port {e['port']} not on Service {s['metadata']['name']}")
    if kind == "PrometheusRule":
        groups = spec.get("groups") or []
        rules = [r for g in groups for r in g.get("rules", [])]
        if not rules or not all("alert" in r or "record" in r for r in rules):
            fail(f"{label}: PrometheusRule without rules")


def pod_specs(docs):
    for _, d in docs:
        if d["kind"] in ("StatefulSet", "Deployment"):
            yield d


def check_workloads(label, values, docs):
    drain = values["drainDeadlineSeconds"]
    for w in pod_specs(docs):
        name = w["metadata"]["name"]
        tpl = w["spec"]["template"]
        spec = tpl["spec"]
        if spec.get("terminationGracePeriodSeconds", 30) <= drain:
            fail(f"{label}: {name} grace period not above the drain deadline")
        if "checksum/config" not in tpl["metadata"].get("annotations", {}):
            fail(f"{label}: {name} has no config checksum annotation")
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(f"{label}: {name} pod security context {psc}")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False \
                    or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                fail(f"{label}: {name}/{c['name']} security context {sc}")
            for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")]:
                p = c.get(probe, {}).get("httpGet", {})
                if p.get("path") != path or p.get("port") != "metrics":
                    fail(f"{label}: {name}/{c['name']} {probe} {p}")
    # Services select pods that exist and name their ports.
    pods = [(w["spec"]["template"]["metadata"]["labels"], w["spec"]["template"]["spec"]["containers"]) for w in pod_specs(docs)]
    for _, s in docs:
        if s["kind"] != "Service":
            continue
        sel = s["spec"]["selector"]
        matched = [cs for labels, cs in pods if all(labels.get(k) == v for k, v in sel.items())]
        if not matched:
            fail(f"{label}: Service {s['metadata']['name']} selects no pod")
        for p in s["spec"]["ports"]:
            for cs in matched:
                names = {(cp["name"], cp.get("protocol", "TCP")) for c in cs for cp in c.get("ports", [])}
                if (p["targetPort"], p.get("protocol", "TCP")) not in names:
                    fail(f"{label}: Service {s['metadata']['name']} port {p['name']} targets {p['targetPort']}, not a container port")


def check_kubernetes_validate(label, docs, work):
    paths = []
    for i, (_, d) in enumerate(docs):
        if d["kind"] in OPERATOR_KINDS:
            check_operator_kind(label, d, docs)
            continue
        p = os.path.join(work, f"{i:02d}-{d['kind']}.yaml")
        with open(p, "w") as fh:
            yaml.safe_dump(d, fh)
        paths.append(p)
    r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *paths], capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
        fail(f"{label}: kubernetes-validate --strict:\n{r.stdout}{r.stderr}")


def check_config_validates(label, values, docs, bin_dir, work):
    cm = [d for _, d in docs if d["kind"] == "ConfigMap" and "node.toml" in d.get("data", {})]
    if len(cm) != 1:
        fail(f"{label}: {len(cm)} node ConfigMaps")
        return
    toml_path = os.path.join(work, "node.toml")
    with open(toml_path, "w") as fh:
        fh.write(cm[0]["data"]["node.toml"])
    secrets = {}
    for _, d in docs:
        if d["kind"] == "Secret":
            for k, v in d.get("data", {}).items():
                secrets[(d["metadata"]["name"], k)] = base64.b64decode(v).decode()
    binary = os.path.join(bin_dir, "micronode" if values["profile"] == "micronode" else "macronode")
    for w in pod_specs(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RON_")}
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif "secretKeyRef" in e.get("valueFrom", {}):
                    ref = e["valueFrom"]["secretKeyRef"]
                    if (ref["name"], ref["key"]) in secrets:
                        env[e["name"]] = secrets[(ref["name"], ref["key"])]
                    elif not ref.get("optional"):
                        # An existing Secret of the user's: the format the docs name.
                        env[e["name"]] = '["an-existing-secret-token"]' if ref["key"] == "write-tokens" else "an-existing-admin-token"
            env["RON_CONFIG"] = toml_path
            args = [binary, "config", "validate"]
            r = subprocess.run(args, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"{label}: {w['metadata']['name']}/{c['name']}: config validate refused the chart's config:\n{r.stdout}{r.stderr}")
            # The container's own arguments (e.g. --amnesia) are run flags:
            # `check` takes the roles the same way and validates them too.
            r = subprocess.run([binary, "check"], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"{label}: {w['metadata']['name']}/{c['name']}: check refused:\n{r.stdout}{r.stderr}")


def values_table():
    """Rows (key, default, description) from values.yaml's `# --` comments."""
    rows = []
    documented = set()
    stack = []  # (indent, key)
    desc = None
    with open(os.path.join(CHART, "values.yaml")) as fh:
        lines = fh.read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)# -- (.*)$", line)
        if m:
            desc = m.group(2)
            i += 1
            while i < len(lines) and re.match(r"^\s*# (?!--)", lines[i]):
                desc += " " + lines[i].strip()[2:]
                i += 1
            continue
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9_]*):(.*)$", line)
        if m:
            indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([k for _, k in stack] + [key])
            parents = [".".join(k for _, k in stack[: n + 1]) for n in range(len(stack))]
            if desc is None and rest not in ("", "|") and not any(p in documented for p in parents):
                fail(f"values.yaml: {path} has no `# --` description")
            if desc is not None:
                documented.add(path)
                default = rest
                if rest in ("", "|"):
                    block = []
                    j = i + 1
                    while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                        block.append(lines[j].strip())
                        j += 1
                    default = "(see values.yaml)" if rest == "|" or any(b for b in block) else ""
                rows.append((path, default, desc))
                desc = None
            stack.append((indent, key))
        elif not line.strip().startswith("#"):
            desc = None
        i += 1
    return rows


def docs_block():
    out = ["| value | default | what it does |", "|---|---|---|"]
    for key, default, desc in values_table():
        d = f"`{default}`" if default and default != "(see values.yaml)" else (default or "")
        cell = desc.replace("|", "\\|")
        out.append(f"| `{key}` | {d} | {cell} |")
    return "\n".join(out)


def check_docs(write):
    with open(RUNBOOK) as fh:
        text = fh.read()
    if BEGIN not in text or END not in text:
        fail(f"docs/RUNBOOK.md lacks the {BEGIN} … {END} block")
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    want = f"{head}{BEGIN}\n{docs_block()}\n{END}{tail}"
    if want != text:
        if write:
            with open(RUNBOOK, "w") as fh:
                fh.write(want)
            print("docs/RUNBOOK.md: values table rewritten")
        else:
            fail("docs/RUNBOOK.md's values table differs from values.yaml; run packaging/helm/check.py --write-docs")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, help="where macronode and micronode binaries are")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    # Helm's INFO lines (a symlinked file, once per load) are noise here.
    disable_logging()
    # A copy with the symlinked files (dashboards, alert rules) resolved,
    # as `helm package` would make it.
    tmp = tempfile.TemporaryDirectory()
    chart_dir = os.path.join(tmp.name, "macronode")
    shutil.copytree(CHART, chart_dir, symlinks=False)
    global CHART_COPY
    CHART_COPY = chart_dir
    with helm.Chart.load(chart_dir) as chart:
        check_refusals(chart)
        for label, values in value_sets():
            check_lint(label, values)
            full = merged(chart, values)
            try:
                chart.validate_schema(full)
                docs = render(chart, values)
            except helm.HelmError as e:
                fail(f"{label}: does not render: {e}")
                continue
            kinds = sorted({d["kind"] for _, d in docs})
            before = len(failures)
            with tempfile.TemporaryDirectory() as work:
                check_kubernetes_validate(label, docs, work)
                check_workloads(label, full, docs)
                check_config_validates(label, full, docs, a.bin_dir, work)
            if len(failures) == before:
                print(f"{label}: {len(docs)} manifests ({', '.join(kinds)}) valid")
    check_docs(a.write_docs)
    if failures:
        print(f"packaging/helm/check.py: {len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
