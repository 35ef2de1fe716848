// Validates the Prometheus Operator resources a rendered chart holds (ServiceMonitor,
// PrometheusRule) against the operator's CRD schemas, which kubernetes-validate does not
// know. The schemas come with the npm package @kubernetes-models/prometheus-operator.
// usage: node validate_crds.mjs RESOURCES.json   (a JSON array of the rendered resources)
import { readFileSync } from "node:fs";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { PrometheusRule, ServiceMonitor };
const resources = JSON.parse(readFileSync(process.argv[2], "utf8"));
for (const resource of resources) {
  const Model = models[resource.kind];
  if (!Model) {
    console.error(`FAIL: no schema for ${resource.apiVersion} ${resource.kind}`);
    process.exitCode = 1;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`  ${resource.kind}/${resource.metadata.name}: valid against the Prometheus Operator CRD`);
  } catch (error) {
    console.error(`FAIL: ${resource.kind}/${resource.metadata.name}: ${error.message}`);
    process.exitCode = 1;
  }
}
