#!/usr/bin/env python3
"""Checks one `helm template` output beyond what the Kubernetes schemas say.

For every workload: the node config it would run (the rendered ConfigMap with the pod's
GOVEX_* environment) passes `govex config check`, and every file it names is on a mounted
volume; the container runs non-root on a
read-only root filesystem with resource limits and probes on /healthz and /readyz; sled
components have a volume claim; a PodDisruptionBudget covers the pods; a NetworkPolicy
selects every pod and opens each port only to the pods of the node and the peers it names;
an example for production (one with Kafka brokers) serves the API over TLS and labels its
ServiceMonitor and PrometheusRule for kube-prometheus-stack. A backup CronJob backs up every
pod that keeps stores, over TLS where the API has it, and its script, run here with a
stand-in govex, keeps the newest backups of each pod and prunes nothing after a failure.

usage: check_rendered.py RENDERED.yaml GOVEX_BINARY
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

WORKLOADS = ("Deployment", "StatefulSet")
# Components that keep sled stores and so need a volume claim.
STATEFUL = {"registry", "elicense", "dossier", "cases"}


def memory_mib(quantity):
    """A Kubernetes memory quantity (512Mi, 1Gi, 1G, 1048576) in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(quantity))
    if not match:
        fail(f"memory quantity {quantity!r} not understood")
    return float(match.group(1)) * units.get(match.group(2), 1 / 2**20)


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main(rendered, govex):
    with open(rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    configs = {d["metadata"]["name"]: d["data"] for d in by_kind.get("ConfigMap", []) if "node.toml" in d.get("data", {})}
    if len(configs) != 1:
        fail(f"{rendered}: expected one ConfigMap with node.toml, found {list(configs)}")
    (config_name, config_data), = configs.items()
    tokens = [d["stringData"]["tokens.toml"] for d in by_kind.get("Secret", []) if "tokens.toml" in d.get("stringData", {})]
    pdb_selectors = [d["spec"]["selector"]["matchLabels"] for d in by_kind.get("PodDisruptionBudget", [])]

    workloads = [d for kind in WORKLOADS for d in by_kind.get(kind, [])]
    if not workloads:
        fail(f"{rendered}: no workloads")
    policies = by_kind.get("NetworkPolicy", [])
    if len(policies) != 1:
        fail(f"{rendered}: expected one NetworkPolicy (deny by default), found {len(policies)}")
    policy = policies[0]["spec"]
    if policy.get("policyTypes") != ["Ingress"]:
        fail(f"{rendered}: the NetworkPolicy does not govern ingress")
    for rule in policy.get("ingress", []):
        if not rule.get("from"):
            fail(f"{rendered}: a NetworkPolicy rule admits every source: {rule}")
        if not rule.get("ports") and any("podSelector" not in peer or "namespaceSelector" in peer for peer in rule["from"]):
            fail(f"{rendered}: only the node's own pods may reach every port: {rule}")
    production = "brokers = " in config_data.get("node.toml", "")
    # The examples are what operators copy: those for production must be fit for it.
    if production and os.environ.get("GOVEX_EXAMPLE") == "1":
        api_pods = [w for w in workloads if "GOVEX_LISTEN__TLS__CERT_PATH" not in {e["name"] for e in w["spec"]["template"]["spec"]["containers"][0].get("env", [])}
                    and any(p.get("name") == "api" for p in w["spec"]["template"]["spec"]["containers"][0].get("ports", []))]
        if api_pods:
            fail(f"{rendered}: {[w['metadata']['name'] for w in api_pods]} serve the API without TLS")
        for kind in ("ServiceMonitor", "PrometheusRule"):
            for doc in by_kind.get(kind, []):
                if "release" not in doc["metadata"].get("labels", {}):
                    fail(f"{rendered}: {kind} has no release label; kube-prometheus-stack would not select it")
    for workload in workloads:
        name = f'{workload["kind"]}/{workload["metadata"]["name"]}'
        pod = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            fail(f"{name}: pod does not set runAsNonRoot")
        (container,) = pod["containers"]
        security = container.get("securityContext", {})
        if not security.get("readOnlyRootFilesystem") or security.get("allowPrivilegeEscalation") is not False:
            fail(f"{name}: container root filesystem is writable or privilege escalation is allowed")
        if not container.get("resources", {}).get("limits") or not container.get("resources", {}).get("requests"):
            fail(f"{name}: container has no resource requests and limits")
        if container["livenessProbe"]["httpGet"]["path"] != "/healthz" or container["readinessProbe"]["httpGet"]["path"] != "/readyz":
            fail(f"{name}: probes are not on /healthz and /readyz")
        if not any(all(labels.get(k) == v for k, v in selector.items()) for selector in pdb_selectors):
            fail(f"{name}: no PodDisruptionBudget selects its pods")

        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        components = set(env["GOVEX_COMPONENTS"].split(","))
        # sled caches up to storage.cache_mib per database: the databases a pod opens must fit
        # in half its memory limit. A store component opens its own and, with the dossier, the
        # use log and the governance views too.
        cache = re.search(r"^cache_mib = (\d+)", config_data.get("node.toml", ""), re.M)
        if cache:
            databases = len(components & STATEFUL) + (2 if "dossier" in components else 0) + ("intake" in components)
            limit = memory_mib(container["resources"]["limits"].get("memory", "0"))
            if databases and int(cache.group(1)) * databases > limit / 2:
                fail(f"{name}: {databases} sled databases × {cache.group(1)} MiB of cache exceed half its {limit:.0f} MiB limit")
        claims = [c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])]
        # A registry read replica keeps its view in memory: the topic is its data.
        stateful = components & STATEFUL - ({"registry"} if "GOVEX_REGISTRY__WRITER_URL" in env else set())
        if stateful and (workload["kind"] != "StatefulSet" or "data" not in claims):
            fail(f"{name}: runs {sorted(stateful)} without a volume claim for sled")

        # Every file the config names must be on a volume the container mounts.
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/govex/node.toml")
        mounted = [m["mountPath"] for m in container["volumeMounts"] if m is not mount]
        named = re.findall(r'"(/etc/govex/[^"]+)"', config_data[mount["subPath"]])
        named += [e["value"] for e in container.get("env", []) if e.get("value", "").startswith("/etc/govex/")]
        for path in named:
            if not any(path.startswith(prefix.rstrip("/") + "/") for prefix in mounted):
                fail(f"{name}: the config names {path}, but no volume is mounted there ({mounted})")

        with tempfile.TemporaryDirectory() as scratch:
            # `config check` reads the certificates and keys a config names, as start does;
            # here, outside the pod, each mounted file is a stand-in of its kind (one
            # self-signed certificate and its key), at a path in the scratch folder.
            config_text = config_data[mount["subPath"]]
            stand_ins = stand_in_files(scratch)
            for path in sorted(set(named), key=len, reverse=True):
                if path.startswith("/etc/govex/tokens"):
                    continue
                target = os.path.join(scratch, "etc", path[len("/etc/govex/"):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                is_key = path.endswith(".key") or os.path.basename(path).startswith("key")
                shutil.copyfile(stand_ins["key" if is_key else "cert"], target)
                config_text = config_text.replace(f'"{path}"', json.dumps(target))
                env = {k: (target if v == path else v) for k, v in env.items()}
            config_path = os.path.join(scratch, "node.toml")
            with open(config_path, "w", encoding="utf-8") as f:
                f.write(config_text)
            run_env = {k: v for k, v in os.environ.items() if not k.startswith("GOVEX_")}
            run_env["RUST_BACKTRACE"] = "0"
            for key, value in env.items():
                if value is None:
                    # From a Secret or the downward API: any value will do for the check.
                    value = "from-a-secret"
                run_env[key] = value.replace("$(POD_NAME)", f'{workload["metadata"]["name"]}-0')
            run_env["GOVEX_DATA_DIR"] = os.path.join(scratch, "data")
            if "GOVEX_INTAKE__TOKENS_FILE" in env:
                # The mounted Secret: the chart's own, or (existingSecret) a stand-in.
                tokens_path = os.path.join(scratch, "tokens.toml")
                with open(tokens_path, "w", encoding="utf-8") as f:
                    f.write(tokens[0] if tokens else '[[tokens]]\ndepartment = "tax"\nsha256 = "' + "0" * 64 + '"\n')
                run_env["GOVEX_INTAKE__TOKENS_FILE"] = tokens_path
            result = subprocess.run([govex, "config", "check", "--config", config_path], env=run_env,
                                    capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"{name}: govex refuses the rendered config {config_name}:\n{result.stderr}{result.stdout}")
            summary = result.stdout.splitlines()
            print(f"  {name}: " + "; ".join(line.split(None, 1)[1] if " " in line else line
                                           for line in summary if line.startswith(("components", "registry", "bridge"))))
    check_backups(by_kind, workloads)
    check_rules_bound(by_kind, workloads, config_data)


def check_rules_bound(by_kind, workloads, config_data):
    """The alerts on the kubelet's and kube-state-metrics' series (no pod labels there) name
    this release's workloads and claims, in its namespace, and carry its division."""
    division = re.search(r'^division = "(\d+)"', config_data.get("node.toml", ""), re.M)
    for rule in by_kind.get("PrometheusRule", []):
        text = "\n".join(r["expr"] for group in rule["spec"]["groups"] for r in group["rules"])
        if ".*govex.*" in text:
            fail(f"PrometheusRule/{rule['metadata']['name']}: a matcher is not bound to the release")
        if division and re.findall(r'"govex_division", "(\d+)"', text) != [division.group(1)] * 2:
            fail(f"PrometheusRule/{rule['metadata']['name']}: its kubelet alerts do not carry division {division.group(1)}")
        for workload in workloads:
            name = workload["metadata"]["name"]
            for pattern in re.findall(r'statefulset=~"([^"]+)",namespace="([^"]+)"', text):
                if not re.fullmatch(pattern[0], name) or pattern[1] != workload["metadata"].get("namespace", pattern[1]):
                    fail(f"PrometheusRule/{rule['metadata']['name']}: {pattern} does not match workload {name}")


def stand_in_files(scratch):
    """A self-signed certificate and its key, made with openssl, for the files a pod mounts."""
    cert, key = os.path.join(scratch, "stand-in.crt"), os.path.join(scratch, "stand-in.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=stand-in",
                    "-days", "1", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return {"cert": cert, "key": key}


def check_backups(by_kind, workloads):
    jobs = [j for j in by_kind.get("CronJob", []) if j["metadata"]["labels"].get("app.kubernetes.io/component") == "backup"]
    for job in jobs:
        name = f'CronJob/{job["metadata"]["name"]}'
        pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            fail(f"{name}: pod does not set runAsNonRoot")
        security = container.get("securityContext", {})
        if not security.get("readOnlyRootFilesystem") or security.get("allowPrivilegeEscalation") is not False:
            fail(f"{name}: container root filesystem is writable or privilege escalation is allowed")
        if not container.get("resources", {}).get("limits"):
            fail(f"{name}: container has no resource limits")
        script = container["args"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        for workload in workloads:
            spec = workload["spec"]["template"]["spec"]
            wenv = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
            if workload["kind"] != "StatefulSet" or not {"elicense", "dossier"} & set(wenv["GOVEX_COMPONENTS"].split(",")):
                continue
            tls = "GOVEX_LISTEN__TLS__CERT_PATH" in wenv
            for i in range(workload["spec"].get("replicas", 1)):
                if f'{workload["metadata"]["name"]}-{i}' not in script.split("for pod in ", 1)[1].split(";", 1)[0].split():
                    fail(f"{name}: {workload['metadata']['name']}-{i} keeps stores and is not backed up")
            if tls and ("https://" not in script or "--ca-cert" not in script):
                fail(f"{name}: the API is served over TLS, and the backup does not use it")
        # The script itself, with a stand-in govex: 9 old backups per pod, KEEP kept.
        with tempfile.TemporaryDirectory() as scratch:
            backups = os.path.join(scratch, "backups")
            os.makedirs(backups)
            pods = script.split("for pod in ", 1)[1].split(";", 1)[0].split()
            for p in pods:
                for day in range(1, 10):
                    path = os.path.join(backups, f"{p}-2026010{day}T023000Z.govexbak")
                    open(path, "w").close()
                    os.utime(path, (day * 86400, day * 86400))
            fake = os.path.join(scratch, "bin")
            os.makedirs(fake)
            with open(os.path.join(fake, "govex"), "w", encoding="utf-8") as f:
                f.write('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done\n'
                        'case "$out" in *"$FAIL_POD"-2*) exit 1;; esac\n: > "$out"\n')
            os.chmod(os.path.join(fake, "govex"), 0o755)
            local = script.replace("/backups", backups)
            run_env = dict(os.environ, PATH=fake + ":" + os.environ["PATH"], PURPOSE=env["PURPOSE"], KEEP=env["KEEP"])
            keep = int(env["KEEP"])
            # A night where the first pod fails: the job fails, that pod keeps all it had.
            result = subprocess.run(["/bin/sh", "-c", local], env=dict(run_env, FAIL_POD=pods[0]), capture_output=True, text=True)
            if result.returncode == 0:
                fail(f"{name}: the job succeeds although {pods[0]} was not backed up")
            left = lambda p: sorted(f for f in os.listdir(backups) if f.startswith(p + "-2"))
            if len(left(pods[0])) != 9:
                fail(f"{name}: a failed backup pruned {pods[0]}'s older ones: {left(pods[0])}")
            result = subprocess.run(["/bin/sh", "-c", local], env=dict(run_env, FAIL_POD="none"), capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"{name}: the backup script failed: {result.stderr}")
            for p in pods:
                kept = left(p)
                if len(kept) != keep or "20260109T023000Z" not in " ".join(kept):
                    fail(f"{name}: {p} keeps {kept}, expected the newest {keep}")
        print(f"  {name}: backs up {' '.join(pods)}, keeps {keep} each")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
