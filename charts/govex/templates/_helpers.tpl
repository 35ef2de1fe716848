{{/* Names, labels and the pod template every workload shares. */}}

{{- define "govex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "govex.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "govex.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "govex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: govex
govex.io/division: {{ .Values.division | quote }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "intake"). */}}
{{- define "govex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "govex.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "govex.componentLabels" -}}
{{ include "govex.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "govex.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether this release runs on the embedded bus (one trial pod). */}}
{{- define "govex.trial" -}}
{{- if not .Values.kafka.bootstrapServers -}}true{{- end -}}
{{- end -}}

{{/* Whether level-bridge links are configured. */}}
{{- define "govex.hasBridge" -}}
{{- if or .Values.bridge.parent .Values.bridge.children -}}true{{- end -}}
{{- end -}}

{{/*
The workloads this release runs, by component, as a JSON list (read it with fromJsonArray):
["node"] for a trial; else the registry (unless an external one is used), intake, elicense,
and the bridge when links are configured. Every per-workload template ranges over this.
*/}}
{{- define "govex.workloads" -}}
{{- $workloads := list -}}
{{- if include "govex.trial" . -}}
{{- $workloads = list "node" -}}
{{- else -}}
{{- if not .Values.schemaRegistry.url }}{{ $workloads = append $workloads "registry" }}{{ end -}}
{{- $workloads = concat $workloads (list "intake" "elicense") -}}
{{- if include "govex.hasBridge" . }}{{ $workloads = append $workloads "bridge" }}{{ end -}}
{{- end -}}
{{- toJson $workloads -}}
{{- end -}}

{{/* The Service of a workload: (dict "root" $ "component" "intake"); the trial's is the release's. */}}
{{- define "govex.serviceName" -}}
{{- if eq .component "node" -}}
{{- include "govex.fullname" .root -}}
{{- else -}}
{{- printf "%s-%s" (include "govex.fullname" .root) .component -}}
{{- end -}}
{{- end -}}

{{/* The registry the split processes use. */}}
{{- define "govex.registryUrl" -}}
{{- if .Values.schemaRegistry.url -}}
{{- .Values.schemaRegistry.url -}}
{{- else -}}
{{- printf "%s://%s-registry:8081" (ternary "https" "http" (not (empty .Values.schemaRegistry.tls.secretName))) (include "govex.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- /* Whether a workload reads the tokens: it serves the API, or it serves a registry that
takes stewards' writes. */}}
{{- define "govex.readsTokens" -}}
{{- if or .workload.api (and .workload.registry .root.Values.schemaRegistry.stewardWrites) -}}true{{- end -}}
{{- end -}}

{{- /* Whether a workload needs the registry's CA: it serves the chart's own registry with
client certificates required (the node's other pods follow the registry's topic and call
no registry). */}}
{{- define "govex.mountsRegistryCa" -}}
{{- $tls := .root.Values.schemaRegistry.tls -}}
{{- if and $tls.secretName (not .root.Values.schemaRegistry.url) -}}
{{- if and .workload.registry $tls.clientSecret -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "govex.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "govex.fullname" .)) .Values.tokens.existingSecret -}}
{{- end -}}

{{- define "govex.hasTokens" -}}
{{- if or .Values.tokens.existingSecret .Values.tokens.entries -}}true{{- end -}}
{{- end -}}

{{- define "govex.kafkaSecret" -}}
{{- default (printf "%s-kafka" (include "govex.fullname" .)) .Values.kafka.sasl.existingSecret -}}
{{- end -}}

{{/*
The pod spec of a workload: (dict "root" $ "component" "intake" "components" "intake"
"registryUrl" true "api" true "resources" .Values.intake.resources "dataVolume" "data"
"groupPerPod" false).
dataVolume is the name of a volume claim template, or empty for an emptyDir.
*/}}
{{/* A memory quantity (512Mi, 1.5Gi, 2G, 1073741824) in whole MiB; a quantity it cannot
read fails the render rather than skipping the checks that use it. */}}
{{- define "govex.mib" -}}
{{- $q := toString . -}}
{{- $units := dict "Ki" (divf 1 1024) "Mi" 1.0 "Gi" 1024.0 "Ti" 1048576.0 "K" (divf 1000 1048576) "M" (divf 1000000 1048576) "G" (divf 1000000000 1048576) "T" (divf 1000000000000 1048576) -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $number $q -}}
{{- if and $number (eq $unit "") }}{{ divf ($number | float64) 1048576 | int }}
{{- else if and $number (hasKey $units $unit) }}{{ mulf ($number | float64) (get $units $unit) | int }}
{{- else }}{{ fail (printf "memory quantity %q: not one this chart reads (a number with Ki, Mi, Gi, Ti, K, M, G, T, or bytes)" $q) }}
{{- end -}}
{{- end -}}

{{- define "govex.podSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- /* sled caches up to storage.cacheMiB per database: what a pod opens must fit in half its
memory limit (a store component its own; the dossier also the use log and governance views;
the intake its idempotency keys). */}}
{{- $components := splitList "," .components -}}
{{- $databases := 0 -}}
{{- range $components }}{{ if has . (list "registry" "elicense" "dossier" "cases" "intake") }}{{ $databases = add1 $databases }}{{ end }}{{ end -}}
{{- if has "dossier" $components }}{{ $databases = add $databases 2 }}{{ end -}}
{{- $limit := include "govex.mib" (dig "limits" "memory" "0" .resources) | int -}}
{{- if and (gt $databases 0) (gt $limit 0) (gt (mul $v.storage.cacheMiB $databases 2) $limit) }}
{{- fail (printf "storage.cacheMiB %d × %d sled databases of the %s pods is over half their %d MiB memory limit: lower storage.cacheMiB or raise the limit" (int $v.storage.cacheMiB) $databases .component $limit) }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "govex.fullname" $root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- /* Sled and the consumers flush on SIGTERM; give them time to drain. */}}
terminationGracePeriodSeconds: 60
containers:
  - name: govex
    image: {{ include "govex.image" $root | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args: ["node", "--config", "/etc/govex/node.toml"]
    env:
      - name: GOVEX_COMPONENTS
        value: {{ .components | quote }}
      {{- /* With govex's own registry the other pods name none: they follow its topic on
      the cluster, so their readiness does not hang on the registry pod. */}}
      {{- with .writerUrl }}
      - name: GOVEX_REGISTRY__WRITER_URL
        value: {{ . | quote }}
      {{- end }}
      {{- if and .registryUrl $v.schemaRegistry.url }}
      - name: GOVEX_REGISTRY__URL
        value: {{ include "govex.registryUrl" $root | quote }}
      {{- end }}
      {{- if and (include "govex.readsTokens" (dict "workload" . "root" $root)) (include "govex.hasTokens" $root) }}
      - name: GOVEX_INTAKE__TOKENS_FILE
        value: /etc/govex/tokens/tokens.toml
      {{- end }}
      {{- $registryTls := $v.schemaRegistry.tls }}
      {{- if and .registry (not .registryUrl) $registryTls.secretName }}
      - name: GOVEX_LISTEN__REGISTRY_TLS__CERT_PATH
        value: /etc/govex/registry-tls/tls.crt
      - name: GOVEX_LISTEN__REGISTRY_TLS__KEY_PATH
        value: /etc/govex/registry-tls/tls.key
      {{- if $registryTls.clientSecret }}
      - name: GOVEX_LISTEN__REGISTRY_TLS__CLIENT_CA_PATH
        value: /etc/govex/registry-ca/ca.crt
      {{- end }}
      {{- end }}
      {{- if and .api $v.api.tls.secretName }}
      - name: GOVEX_LISTEN__TLS__CERT_PATH
        value: /etc/govex/api-tls/tls.crt
      - name: GOVEX_LISTEN__TLS__KEY_PATH
        value: /etc/govex/api-tls/tls.key
      {{- if $v.api.tls.clientCaSecret }}
      - name: GOVEX_LISTEN__TLS__CLIENT_CA_PATH
        value: /etc/govex/api-client-ca/ca.crt
      {{- end }}
      {{- end }}
      - name: RUST_LOG
        value: {{ $v.log.level | quote }}
      - name: POD_NAME
        valueFrom:
          fieldRef: {fieldPath: metadata.name}
      {{- if .groupPerPod }}
      {{- /* Each replica of a store reads every record: a consumer group of its own. */}}
      - name: GOVEX_BUS__GROUP_PREFIX
        value: {{ printf "%s-$(POD_NAME)" $v.kafka.groupPrefix | quote }}
      {{- end }}
      {{- if and (not (include "govex.trial" $root)) $v.kafka.sasl.mechanism }}
      - name: KAFKA_SASL_PASSWORD
        valueFrom:
          secretKeyRef:
            name: {{ include "govex.kafkaSecret" $root }}
            key: {{ $v.kafka.sasl.passwordKey }}
      {{- end }}
      {{- if eq .component "bridge" "node" }}
      {{- with $v.bridge.parent.passwordSecret }}
      - name: BRIDGE_PARENT_SASL_PASSWORD
        valueFrom:
          secretKeyRef: {name: {{ .name }}, key: {{ .key }}}
      {{- end }}
      {{- range $i, $child := $v.bridge.children }}
      {{- with $child.passwordSecret }}
      - name: BRIDGE_CHILD_{{ $i }}_SASL_PASSWORD
        valueFrom:
          secretKeyRef: {name: {{ .name }}, key: {{ .key }}}
      {{- end }}
      {{- end }}
      {{- end }}
      {{- with $v.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    ports:
      {{- if .api }}
      - {name: api, containerPort: 8080, protocol: TCP}
      {{- end }}
      {{- if .registry }}
      - {name: registry, containerPort: 8081, protocol: TCP}
      {{- end }}
      - {name: ops, containerPort: 9464, protocol: TCP}
    {{- /*
    Start-up registers the schemas and waits up to two minutes for a registry that is not
    up yet; /healthz answers once the node has started.
    */}}
    startupProbe:
      httpGet: {path: /healthz, port: ops}
      periodSeconds: 5
      failureThreshold: 36
    livenessProbe:
      httpGet: {path: /healthz, port: ops}
      periodSeconds: 10
      timeoutSeconds: 3
      failureThreshold: 3
    readinessProbe:
      httpGet: {path: /readyz, port: ops}
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 3
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- toYaml $v.securityContext | nindent 6 }}
    volumeMounts:
      {{- /* Only the pods that run bridges see the links (and their password references). */}}
      - name: config
        mountPath: /etc/govex/node.toml
        subPath: {{ if eq .component "bridge" "node" }}bridge.toml{{ else }}node.toml{{ end }}
        readOnly: true
      - {name: {{ default "data" .dataVolume }}, mountPath: /var/lib/govex}
      - {name: tmp, mountPath: /tmp}
      {{- if $v.catalog }}
      {{- /* A directory, not a subPath: the kubelet then updates it when the catalogue changes. */}}
      - {name: catalog, mountPath: /etc/govex/catalog, readOnly: true}
      {{- end }}
      {{- if and (include "govex.readsTokens" (dict "workload" . "root" $root)) (include "govex.hasTokens" $root) }}
      - {name: tokens, mountPath: /etc/govex/tokens, readOnly: true}
      {{- end }}
      {{- if and .registry (not .registryUrl) $v.schemaRegistry.tls.secretName }}
      - {name: registry-tls, mountPath: /etc/govex/registry-tls, readOnly: true}
      {{- end }}
      {{- if include "govex.mountsRegistryCa" (dict "workload" . "root" $root) }}
      - {name: registry-ca, mountPath: /etc/govex/registry-ca, readOnly: true}
      {{- end }}
      {{- if and .api $v.api.tls.secretName }}
      - {name: api-tls, mountPath: /etc/govex/api-tls, readOnly: true}
      {{- end }}
      {{- if and .api $v.api.tls.clientCaSecret }}
      - {name: api-client-ca, mountPath: /etc/govex/api-client-ca, readOnly: true}
      {{- end }}
      {{- if and (not (include "govex.trial" $root)) $v.kafka.tls.caSecret }}
      - {name: kafka-ca, mountPath: /etc/govex/kafka-ca, readOnly: true}
      {{- end }}
      {{- if and (not (include "govex.trial" $root)) $v.kafka.tls.clientSecret }}
      - {name: kafka-client, mountPath: /etc/govex/kafka-client, readOnly: true}
      {{- end }}
      {{- with $v.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap: {name: {{ include "govex.fullname" $root }}}
  {{- if not .dataVolume }}
  - name: data
    emptyDir: {}
  {{- end }}
  - name: tmp
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  {{- if $v.catalog }}
  - name: catalog
    configMap:
      name: {{ include "govex.fullname" $root }}
      items: [{key: catalog.toml, path: catalog.toml}]
  {{- end }}
  {{- if and (include "govex.readsTokens" (dict "workload" . "root" $root)) (include "govex.hasTokens" $root) }}
  - name: tokens
    secret: {secretName: {{ include "govex.tokensSecret" $root }}}
  {{- end }}
  {{- if and .registry (not .registryUrl) $v.schemaRegistry.tls.secretName }}
  - name: registry-tls
    secret: {secretName: {{ $v.schemaRegistry.tls.secretName }}}
  {{- end }}
  {{- if include "govex.mountsRegistryCa" (dict "workload" . "root" $root) }}
  - name: registry-ca
    secret: {secretName: {{ $v.schemaRegistry.tls.caSecret }}}
  {{- end }}
  {{- if and .api $v.api.tls.secretName }}
  - name: api-tls
    secret: {secretName: {{ $v.api.tls.secretName }}}
  {{- end }}
  {{- if and .api $v.api.tls.clientCaSecret }}
  - name: api-client-ca
    secret: {secretName: {{ $v.api.tls.clientCaSecret }}}
  {{- end }}
  {{- if and (not (include "govex.trial" $root)) $v.kafka.tls.caSecret }}
  - name: kafka-ca
    secret: {secretName: {{ $v.kafka.tls.caSecret }}}
  {{- end }}
  {{- if and (not (include "govex.trial" $root)) $v.kafka.tls.clientSecret }}
  - name: kafka-client
    secret: {secretName: {{ $v.kafka.tls.clientSecret }}}
  {{- end }}
{{- with $v.extraVolumes }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
{{- /* The component's own pods: labelSelector may be left out and is filled in. */}}
topologySpreadConstraints:
  {{- range . }}
  - {{- toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" (fromYaml (include "govex.selectorLabels" (dict "root" $root "component" $.component)))))) | nindent 4 }}
  {{- end }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod metadata: labels and a checksum of the config, so a config change rolls the pods. */}}
{{- define "govex.podMetadata" -}}
labels:
  {{- include "govex.selectorLabels" . | nindent 2 }}
  {{- if has .component (list "registry" "registry-read") }}
  {{- /* The registry's Service selects the writer and its read replicas by this. */}}
  govex.io/registry-api: "true"
  {{- end }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* A volume claim template for sled. */}}
{{- define "govex.volumeClaim" -}}
- metadata:
    name: data
  spec:
    accessModes: [ReadWriteOnce]
    {{- with .storageClass }}
    storageClassName: {{ . | quote }}
    {{- end }}
    resources:
      requests:
        storage: {{ .size }}
{{- end -}}
