#!/usr/bin/env python3
"""Checks the monitoring files of the docker-compose stack without Docker: every YAML and JSON
file parses, Prometheus scrapes services that exist in docker-compose.yml, Grafana mounts the
provisioning and the dashboard, and the dashboard only uses the provisioned datasource.

Whether the dashboard's metric names exist on a real server is checked by
client-tests/tests/dashboard.test.mjs. Needs PyYAML (`apt-get install python3-yaml`)."""
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
errors = []


def check(ok, what):
    if not ok:
        errors.append(what)


compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose["services"]
prometheus = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/switchboard.yml").read_text())
dashboard = json.loads((ROOT / "deploy/grafana/switchboard.json").read_text())

for job in prometheus["scrape_configs"]:
    for static in job["static_configs"]:
        for target in static["targets"]:
            host = target.split(":")[0]
            check(host in services, f"Prometheus scrapes {target}, which is not a compose service")

check("prometheus" in services and "grafana" in services, "compose lacks prometheus or grafana")
volumes = " ".join(services.get("grafana", {}).get("volumes", []))
check("./deploy/grafana/provisioning:" in volumes, "grafana does not mount the provisioning directory")
dash_path = providers["providers"][0]["options"]["path"]
check(f"switchboard.json:{dash_path}/" in volumes, f"grafana does not mount the dashboard under {dash_path}")
check("./deploy/prometheus.yml:" in " ".join(services.get("prometheus", {}).get("volumes", [])),
      "prometheus does not mount deploy/prometheus.yml")

uids = {d["uid"] for d in datasources["datasources"]}
for panel in dashboard["panels"]:
    for item in [panel, *panel.get("targets", [])]:
        ds = item.get("datasource")
        if ds:
            check(ds.get("uid") in uids, f"panel '{panel['title']}' uses datasource {ds} that is not provisioned")
    if panel["type"] != "row":
        check(panel.get("targets"), f"panel '{panel['title']}' has no query")
for var in dashboard["templating"]["list"]:
    check(var["datasource"]["uid"] in uids, f"variable {var['name']} uses an unprovisioned datasource")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"deploy files OK ({len(dashboard['panels'])} panels, {len(services)} services)")
