#!/usr/bin/env python3
"""Checks the labels the dashboard and the alerts query against a live scrape: every label a
query groups by (`by (...)`) or matches on (`{label="..."}`) must be one the metric carries
in the scrape. Metrics with no series in the scrape (no traffic of that kind) are listed as
unchecked; their names are checked by the integration test `deploy::every_metric_...`.

usage: check_queries.py SCRAPE.txt DASHBOARD.json ALERTS.yaml
"""
import json
import re
import sys

import yaml

# Labels Prometheus adds from the target, or that histograms carry by nature.
TARGET_LABELS = {"le", "namespace", "pod", "job", "instance", "service", "govex_division", "govex_component"}


def scraped_labels(path):
    labels = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if match:
            keys = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
            labels.setdefault(match.group(1), set()).update(keys)
    return labels


def queries(dashboard_path, alerts_path):
    dashboard = json.load(open(dashboard_path, encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f'dashboard panel "{panel["title"]}"', target["expr"]
    for group in yaml.safe_load(open(alerts_path, encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            yield f'alert {rule["alert"]}', rule["expr"]


def main(scrape, dashboard, alerts):
    exposed = scraped_labels(scrape)
    checked, unchecked, problems = set(), set(), []
    for where, expr in queries(dashboard, alerts):
        grouped = {l.strip() for by in re.findall(r"\bby\s*\(([^)]*)\)", expr) for l in by.split(",") if l.strip()}
        for metric, matchers in re.findall(r"(govex_[a-z_]+)(?:\{([^}]*)\})?", expr):
            if metric in TARGET_LABELS:
                continue
            if metric not in exposed:
                unchecked.add(metric)
                continue
            checked.add(metric)
            matched = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|!~|=)', matchers or ""))
            for label in sorted((grouped | matched) - TARGET_LABELS):
                if label not in exposed[metric]:
                    problems.append(f"{where}: {metric} has no label {label!r} (it has {sorted(exposed[metric])})")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"  query labels: {len(checked)} metrics checked against the scrape; "
          f"no series to check for {sorted(unchecked)}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
