#!/usr/bin/env python3
"""Writes the Grafana dashboards in this folder from the panel lists below.

Run after changing a panel: `python3 packaging/grafana/generate.py`; commit
the JSON. packaging/check.sh regenerates them and fails on a difference,
and checks every PromQL expression with promtool.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_VERSION = 41  # Grafana 12
SEL = 'instance=~"$instance"'


def q95(metric, by="le", extra=""):
    sel = SEL + ("," + extra if extra else "")
    return f"histogram_quantile(0.95, sum by ({by}) (rate({metric}_bucket{{{sel}}}[$__rate_interval])))"


def rate(metric, extra="", by=None):
    sel = SEL + ("," + extra if extra else "")
    inner = f"rate({metric}{{{sel}}}[$__rate_interval])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def gauge(metric, extra=""):
    sel = SEL + ("," + extra if extra else "")
    return f"{metric}{{{sel}}}"


# (title, unit, [(expr, legend)])
COMMON = [
    ("Ready", "none", [(gauge("node_ready"), "{{instance}}")]),
    ("Requests by route", "reqps", [(rate("http_requests_total", by="route"), "{{route}}")]),
    ("5xx ratio", "percentunit", [(
        f'sum(rate(http_requests_total{{{SEL},code=~"5.."}}[$__rate_interval])) / clamp_min(sum(rate(http_requests_total{{{SEL}}}[$__rate_interval])), 1)',
        "5xx")]),
    ("Request p95 by route", "s", [(q95("request_latency_seconds", "le, route"), "{{route}}")]),
    ("Refusals by reason", "reqps", [(rate("rejected_total", by="reason"), "{{reason}}")]),
    ("Role restarts", "short", [(f"increase(service_restarts_total{{{SEL}}}[$__rate_interval])", "{{service}}")]),
    ("Bus lag and drops", "short", [
        (f"rate(bus_lagged_total{{{SEL}}}[$__rate_interval])", "lagged"),
        (f"rate(bus_overflow_dropped_total{{{SEL}}}[$__rate_interval])", "overflow dropped")]),
    ("Open FDs", "short", [
        (gauge("process_open_fds"), "open {{instance}}"),
        (gauge("process_max_fds"), "max {{instance}}")]),
    ("Resident memory", "bytes", [(gauge("process_resident_memory_bytes"), "{{instance}}")]),
    ("CPU", "percentunit", [(f"rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval])", "{{instance}}")]),
]

ROLES = {
    "omnigate": [
        ("Hydration p95", "s", [(q95("omnigate_hydration_latency_seconds"), "p95")]),
        ("Range-start p95", "s", [(q95("omnigate_range_start_latency_seconds"), "p95")]),
        ("Downstream p95 by service", "s", [(q95("downstream_latency_seconds", "le, service"), "{{service}}")]),
        ("Downstream connect errors", "short", [(rate("downstream_connect_errors_total", by="service"), "{{service}}")]),
        ("Quota sheds", "reqps", [(rate("rejected_total", 'reason="quota"'), "quota")]),
        ("Busy and shed writes", "reqps", [(rate("rejected_total", 'reason=~"busy|shed_write"', by="reason"), "{{reason}}")]),
        ("In flight", "short", [(gauge("inflight_requests"), "{{instance}}")]),
        ("Hedged reads", "short", [(rate("omnigate_hedged_reads_total", by="outcome"), "{{outcome}}")]),
    ],
    "registry": [
        ("Read p95 (/registry/head)", "s", [(q95("request_latency_seconds", extra='route="/registry/head"'), "p95")]),
        ("Commit p95", "s", [(q95("commit_latency_seconds"), "p95")]),
        ("Head version", "none", [(gauge("registry_head_version"), "{{instance}}")]),
        ("Checkpoint age", "s", [(f"max_over_time(registry_checkpoint_age_seconds{{{SEL}}}[$__rate_interval])", "{{instance}}")]),
        ("Approvals by result", "short", [(rate("approval_verify_total", by="result"), "{{result}}")]),
        ("Commit CAS failures", "short", [(rate("commit_cas_fail_total"), "chain_mismatch")]),
        ("Stream clients", "short", [(gauge("registry_stream_clients"), "{{instance}}")]),
        ("Follower applied / rejected", "short", [
            (rate("registry_follower_applied_total"), "applied"),
            (rate("registry_follower_rejected_total", by="reason"), "rejected {{reason}}")]),
    ],
    "overlay": [
        ("Sessions", "short", [(gauge("overlay_sessions_active"), "{{instance}}")]),
        ("Frames in flight", "short", [(gauge("overlay_inflight_frames"), "{{state}}")]),
        ("OAP/1 frames by kind", "short", [(rate("oap_frames_total", by="kind"), "{{kind}}")]),
        ("OAP/1 reject ratio", "percentunit", [(
            f"sum(rate(oap_rejects_total{{{SEL}}}[$__rate_interval])) / clamp_min(sum(rate(oap_frames_total{{{SEL}}}[$__rate_interval])), 1)",
            "rejected")]),
        ("OAP/1 rejects by reason", "short", [(rate("oap_rejects_total", by="reason"), "{{reason}}")]),
        ("Frame read p95", "s", [(q95("oap_read_frame_seconds"), "p95")]),
        ("ACK window granted", "short", [(gauge("oap_ack_window"), "{{instance}}")]),
        ("Handshakes", "short", [(rate("handshake_total", by="result, kex"), "{{result}} {{kex}}")]),
        ("Bytes", "Bps", [(rate("overlay_bytes_total", by="dir"), "{{dir}}")]),
    ],
    "storage": [
        ("Bytes stored", "bytes", [(gauge("storage_bytes_stored"), "{{instance}}")]),
        ("Chunks", "short", [(gauge("storage_chunks"), "{{instance}}")]),
        ("Dedup ratio", "none", [(gauge("storage_dedup_ratio"), "{{instance}}")]),
        ("Integrity errors", "short", [(rate("storage_integrity_errors_total"), "integrity")]),
        ("Object request p95", "s", [(q95("request_latency_seconds", "le, route", 'route=~"/v1/o.*"'), "{{route}}")]),
    ],
    "index": [
        ("Names", "short", [(gauge("index_names"), "{{instance}}")]),
        ("Name request p95", "s", [(q95("request_latency_seconds", "le, route", 'route="/v1/names/{name}"'), "{{route}}")]),
        ("Name requests by code", "reqps", [(rate("http_requests_total", 'route="/v1/names/{name}"', by="code"), "{{code}}")]),
    ],
    "mailbox": [
        ("Depth by topic", "short", [(gauge("mailbox_depth"), "{{topic}}")]),
        ("Redeliveries", "short", [(rate("mailbox_redeliveries_total"), "redeliveries")]),
        ("Dead letters", "short", [(rate("mailbox_dead_letters_total"), "dead letters")]),
        ("Topic request p95", "s", [(q95("request_latency_seconds", "le, route", 'route=~"/v1/topics/.*"'), "{{route}}")]),
    ],
}


def panel(i, title, unit, targets):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + n), "expr": e, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for n, (e, legend) in enumerate(targets)
        ],
    }


def dashboard(uid, title, panels):
    return {
        "uid": uid,
        "title": title,
        "tags": ["macronode"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "instance", "type": "query", "label": "Instance",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(node_ready, instance)", "refId": "instance"},
             "definition": "label_values(node_ready, instance)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2},
        ]},
        "annotations": {"list": []},
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def main():
    out = {"macronode-overview.json": dashboard("macronode-overview", "macronode / overview", COMMON)}
    for role, panels in ROLES.items():
        out[f"macronode-{role}.json"] = dashboard(f"macronode-{role}", f"macronode / {role}", panels)
    for name, d in out.items():
        with open(os.path.join(HERE, name), "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
