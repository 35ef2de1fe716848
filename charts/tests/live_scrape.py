#!/usr/bin/env python3
"""A live scrape of a node that runs the trial chart's pod: its rendered config and its
environment, with loopback ports, a scratch data directory, CI's own tokens, and a bridge
link to a city node (on a standalone `govex broker`) so that the bridge metrics have series.

Records of every type go in through the county's intake; a licence issued at the city comes
down the bridge into the county's store; it is verified there; a case is completed; a
revoked licence sent as valid again goes to the dead-letter topic. Then
`promtool check metrics` lints the county's /metrics, the dashboard's and alerts' labels are
checked against it (check_queries.py), OpenMetrics is asked for, and both nodes must stop
cleanly on SIGTERM.

usage: live_scrape.py TRIAL_RENDERED.yaml GOVEX_BINARY SCRATCH_DIR
"""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

DEPARTMENTS = ["land-registry", "housing", "tax", "provident-fund", "platform"]
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def fail(message, logs=()):
    for log in logs:
        print(f"--- {log}", file=sys.stderr)
        print(open(log, encoding="utf-8", errors="replace").read()[-4000:], file=sys.stderr)
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def http(method, url, token=None, body=None, accept=None):
    request = urllib.request.Request(url, method=method, data=body)
    if token:
        request.add_header("authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("content-type", "application/json")
    if accept:
        request.add_header("accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait_for(what, check, seconds, logs=()):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.25)
    fail(f"{what} within {seconds} s", logs)


class Node:
    def __init__(self, name, binary, config, env, scratch):
        self.name, self.scratch = name, scratch
        self.api, self.registry, self.ops = free_ports(3)
        self.log = os.path.join(scratch, f"{name}.log")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GOVEX_")}
        full_env.update(env)
        full_env.update({
            "RUST_LOG": "warn", "RUST_BACKTRACE": "0", "GOVEX_LOG__FORMAT": "text",
            "GOVEX_DATA_DIR": os.path.join(scratch, f"{name}-data"),
            "GOVEX_INTAKE__TOKENS_FILE": os.path.join(scratch, "tokens.toml"),
            "GOVEX_LISTEN__API": f"127.0.0.1:{self.api}",
            "GOVEX_LISTEN__REGISTRY": f"127.0.0.1:{self.registry}",
            "GOVEX_LISTEN__OPS": f"127.0.0.1:{self.ops}",
        })
        args = [binary, "node"] + (["--config", config] if config else [])
        self.process = subprocess.Popen(args, env=full_env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        wait_for(f"{name} node ready", lambda: self.alive() and http("GET", self.url("ops", "/readyz"))[0] == 200,
                 120, [self.log])

    def alive(self):
        if self.process.poll() is not None:
            fail(f"the {self.name} node exited with {self.process.returncode}", [self.log])
        return True

    def url(self, port, path):
        return f"http://127.0.0.1:{getattr(self, port)}{path}"

    def post(self, department, record, body):
        status, answer = http("POST", self.url("api", f"/v1/{department}/{record}"), f"ci-token-{department}",
                              body.encode())
        if status != 202:
            fail(f"{self.name}: {department}/{record} answered {status}: {answer}", [self.log])

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            fail(f"the {self.name} node did not stop within 60 s of SIGTERM", [self.log])
        if code != 0:
            fail(f"the {self.name} node stopped with {code}", [self.log])


def trial_pod(rendered, scratch):
    """The trial StatefulSet's node config (the file its pod mounts) and literal environment."""
    docs = [d for d in yaml.safe_load_all(open(rendered, encoding="utf-8")) if d]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and "node.toml" in d.get("data", {}))
    (container,) = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/govex/node.toml")
    path = os.path.join(scratch, "county.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(config_map["data"][mount["subPath"]])
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return path, env


def main(rendered, binary, scratch):
    with open(os.path.join(scratch, "tokens.toml"), "w", encoding="utf-8") as f:
        for department in DEPARTMENTS:
            digest = hashlib.sha256(f"ci-token-{department}".encode()).hexdigest()
            f.write(f'[[tokens]]\ndepartment = "{department}"\nsha256 = "{digest}"\n')
    broker_log = os.path.join(scratch, "broker.log")
    broker = subprocess.Popen([binary, "broker"], stdout=open(broker_log, "w"), stderr=subprocess.STDOUT,
                              env={**os.environ, "RUST_LOG": "warn"})

    def announced():
        return re.search(r"bootstrap servers: (\S+)", open(broker_log, encoding="utf-8").read())
    wait_for("the city's broker", announced, 30, [broker_log])
    bootstrap = announced().group(1)
    nodes = []
    try:
        city = Node("city", binary, None, {"GOVEX_DIVISION": "610900", "GOVEX_BUS__BROKERS": bootstrap,
                                           "GOVEX_BUS__REPLICATION_FACTOR": "3"}, scratch)
        nodes.append(city)
        config, env = trial_pod(rendered, scratch)
        env.pop("GOVEX_INTAKE__TOKENS_FILE", None)
        if "bridge" not in env["GOVEX_COMPONENTS"].split(","):
            env["GOVEX_COMPONENTS"] += ",bridge"
        env["GOVEX_BRIDGE__PARENT__BROKERS"] = bootstrap
        # Schema ids are translated between the two nodes' registries.
        env["GOVEX_BRIDGE__PARENT__REGISTRY"] = city.url("registry", "")
        county = Node("county", binary, config, env, scratch)
        nodes.append(county)

        records = os.path.join(REPO, "examples", "records")
        licence = open(os.path.join(records, "platform.licence.json"), encoding="utf-8").read()
        for name in sorted(os.listdir(records)):
            department, record, _ = name.split(".")
            if name == "platform.licence.json":
                city.post(department, record, licence)  # issued at the city, comes down the bridge
            else:
                county.post(department, record, open(os.path.join(records, name), encoding="utf-8").read())
        case = json.load(open(os.path.join(records, "platform.case-event.json"), encoding="utf-8"))
        case.update({"stage": "COMPLETED", "occurred_at": "2026-11-23T16:00:00+08:00"})
        county.post("platform", "case-event", json.dumps(case))

        licence_id = json.loads(licence)["licence_id"]
        wait_for("the city's licence in the county's store (down the bridge)", lambda: county.alive() and http(
            "GET", county.url("api", f"/v1/licences/{licence_id}?purpose=ci"), "ci-token-land-registry")[0] == 200,
            60, [county.log, city.log])
        status, answer = http("POST", county.url("api", f"/v1/licences/{licence_id}/verify"),
                              "ci-token-provident-fund", json.dumps({"purpose": "CI verification"}).encode())
        if status != 200 or json.loads(answer)["result"] != "valid":
            fail(f"verification answered {status}: {answer}", [county.log])

        # The county revokes the licence, then a system sends it as valid again: a revoked
        # licence does not come back, so the sink parks that record in the dead-letter topic.
        for status in ["REVOKED", "VALID"]:
            county.post("platform", "licence", json.dumps({**json.loads(licence), "status": status}))

        scrape_path = os.path.join(scratch, "metrics.txt")
        wanted = ['govex_intake_records_total{department="tax",record="deed-tax-payment",outcome="accepted"',
                  'govex_elicense_verifications_total{result="valid"}', "govex_elicense_verify_latency_seconds_bucket",
                  "govex_bridge_forwarded_records_total{", "govex_bridge_hop_latency_seconds_bucket{",
                  "govex_bridge_heartbeat_timestamp_seconds{", 'govex_case_completed_total{division="610921"',
                  "govex_bus_consumer_lag_records{", 'govex_bus_dead_letters_total{component="elicense-store"']
        scrape = {}

        def complete():
            scrape["text"] = http("GET", county.url("ops", "/metrics"))[1]
            return all(w in scrape["text"] for w in wanted)
        # Consumer lag is measured every 10 s: wait for a scrape that has every kind of series.
        wait_for("a scrape with " + ", ".join(wanted), complete, 45, [county.log])
        with open(scrape_path, "w", encoding="utf-8") as f:
            f.write(scrape["text"])
        lint = subprocess.run(["promtool", "check", "metrics"], input=scrape["text"], capture_output=True, text=True)
        if lint.returncode != 0:
            fail(f"promtool check metrics:\n{lint.stdout}{lint.stderr}")
        queries = subprocess.run([sys.executable, os.path.join(HERE, "check_queries.py"), scrape_path,
                                  os.path.join(REPO, "charts/govex/files/dashboard.json"),
                                  os.path.join(REPO, "charts/govex/files/alerts.yaml")], capture_output=True, text=True)
        print(queries.stdout, end="")
        if queries.returncode != 0:
            fail(f"the dashboard or the alerts query labels the node does not have:\n{queries.stderr}")
        status, openmetrics = http("GET", county.url("ops", "/metrics"),
                                   accept="application/openmetrics-text; version=1.0.0")
        if status != 200 or not openmetrics.rstrip().endswith("# EOF"):
            fail("/metrics does not answer OpenMetrics when asked")
        families = scrape["text"].count("# TYPE ")
        series = sum(1 for line in scrape["text"].splitlines() if line and not line.startswith("#"))
        print(f"  county node (trial chart config + a bridge to the city): {families} metric families, "
              f"{series} series; promtool finds no problem")
        while nodes:
            nodes.pop().stop()
    finally:
        for node in nodes:
            node.process.kill()
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
