{{/*
Names, labels and the small decisions shared by several templates.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "rollguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 63 characters (some name fields are DNS labels).
A release named like the chart ("rollguard") is not doubled to "rollguard-rollguard".
*/}}
{{- define "rollguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart label value: name-version, "+" is not allowed in label values. */}}
{{- define "rollguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "rollguard.labels" -}}
helm.sh/chart: {{ include "rollguard.chart" . }}
{{ include "rollguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the pods: never change them in an upgrade (a Deployment's selector is immutable). */}}
{{- define "rollguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "rollguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rollguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: a digest, when given, pins the exact image and wins over the tag. */}}
{{- define "rollguard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the notifier credentials come from, or "" when there is none. */}}
{{- define "rollguard.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.create }}
{{- printf "%s-notifiers" (include "rollguard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The ConfigMap mounted as the rules directory. */}}
{{- define "rollguard.rulesConfigMapName" -}}
{{- if .Values.existingRulesConfigMap }}
{{- .Values.existingRulesConfigMap }}
{{- else }}
{{- printf "%s-rules" (include "rollguard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The Lease the replicas elect a leader with (in the release namespace). */}}
{{- define "rollguard.leaseName" -}}
{{- default (include "rollguard.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The namespaces rollguard watches, as a JSON list: [] with watch.clusterWide (every namespace), else
watch.namespaces, else the release namespace. ROLLGUARD_NAMESPACES and the Roles both come from it.
*/}}
{{- define "rollguard.watchedNamespaces" -}}
{{- if .Values.watch.clusterWide }}
{{- list | toJson }}
{{- else if .Values.watch.namespaces }}
{{- .Values.watch.namespaces | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* Where a Secret's key is mounted: /var/run/secrets/rollguard/NAME/KEY (the `{secret: NAME, key: KEY}` path). */}}
{{- define "rollguard.secretFile" -}}
{{- printf "/var/run/secrets/rollguard/%s/%s" .name .key }}
{{- end }}

{{/*
The Secrets mounted as files, as JSON {name: [keys]}: one volume per Secret however many values name it.
*/}}
{{- define "rollguard.mountedSecrets" -}}
{{- $mounted := dict }}
{{- range $ref := list .Values.prometheus.bearerTokenSecret .Values.prometheus.caSecret .Values.api.tokenSecret .Values.alertmanager.webhookTokenSecret }}
{{- if $ref.name }}
{{- $_ := set $mounted $ref.name (append (default (list) (get $mounted $ref.name)) $ref.key | uniq) }}
{{- end }}
{{- end }}
{{- $mounted | toJson }}
{{- end }}

{{/*
The rule files given in values, without their comments (a commented-out signal must not count).
Only ` #` or a line-starting `#` opens a comment, so `channel: "#deploys"` is kept.
*/}}
{{- define "rollguard.ruleTexts" -}}
{{- $texts := dict }}
{{- range $file, $text := .Values.rules }}
{{- $_ := set $texts $file (regexReplaceAll "(?m)(^|\\s)#.*$" $text "") }}
{{- end }}
{{- $texts | toJson }}
{{- end }}

{{/*
What rollguard may do in a watched namespace (or, cluster-wide, in every namespace).
Each verb's reason is in the chart README ("RBAC"); tests/test_chart.py holds the same table and fails
on any widening. dryRun drops every write verb except events (the audit trail still works).
*/}}
{{- define "rollguard.watchRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments"]
  {{- if .Values.dryRun }}
  verbs: ["get", "list", "watch"]
  {{- else }}
  verbs: ["get", "list", "watch", "patch"]
  {{- end }}
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- /* Only a policy with a pre-rollback Job needs these; no Job-creating power by default. */}}
{{- if .Values.rollbackJobs.enabled }}
- apiGroups: ["batch"]
  resources: ["jobs"]
  {{- if .Values.dryRun }}
  verbs: ["get"]
  {{- else }}
  verbs: ["create", "get"]
  {{- end }}
{{- end }}
{{- end }}

{{/*
Combinations of values that the schema cannot express; each fails the install with what to change.
Included once, from the Deployment template.
*/}}
{{- define "rollguard.validate" -}}
{{- if and .Values.secrets.existingSecret .Values.secrets.create }}
{{- fail "secrets: set either secrets.existingSecret (recommended) or secrets.create, not both" }}
{{- end }}
{{- if .Values.secrets.create }}
{{- $v := .Values.secrets.values }}
{{- if not (or $v.slackToken $v.slackWebhookUrl $v.pagerdutyRoutingKey) }}
{{- fail "secrets.create is true but secrets.values holds no credential: set one, or use secrets.existingSecret" }}
{{- end }}
{{- end }}
{{- if and .Values.existingRulesConfigMap .Values.rules }}
{{- fail "rules: set either rules (files in values) or existingRulesConfigMap, not both" }}
{{- end }}
{{- if and .Values.watch.clusterWide .Values.watch.namespaces }}
{{- fail (printf "watch: set either watch.clusterWide (every namespace) or watch.namespaces (%s), not both" (join ", " .Values.watch.namespaces)) }}
{{- end }}
{{- if gt (mulf 2 .Values.leaderElection.writeMargin) (float64 .Values.leaderElection.leaseDurationSeconds) }}
{{- fail (printf "leaderElection.writeMargin is %v but may be at most half of leaderElection.leaseDurationSeconds (%v): lower it or lengthen the lease" .Values.leaderElection.writeMargin .Values.leaderElection.leaseDurationSeconds) }}
{{- end }}
{{- range $file, $text := include "rollguard.ruleTexts" . | fromJson }}
{{- if and (not $.Values.prometheus.url) (regexMatch "(^|[\\s{,])prometheus\\s*:" $text) }}
{{- fail (printf "rules %s has a prometheus signal but prometheus.url is not set: set prometheus.url to your Prometheus HTTP API (e.g. http://prometheus-operated.monitoring:9090), or remove the signal" $file) }}
{{- end }}
{{- range $ref := regexFindAll "(^|[\\s{,])secret\\s*:\\s*[\"']?[a-z0-9][-a-z0-9.]*" $text -1 }}
{{- $name := regexReplaceAll "^.*secret\\s*:\\s*[\"']?" $ref "" }}
{{- if not (has $name $.Values.notify.policySecrets) }}
{{- fail (printf "rules %s: a policy reads Secret %s ({secret: %s, ...}) but notify.policySecrets does not list it: add it, so the daemon may read it (otherwise that policy's alerts go to the default route)" $file $name $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: several replicas would all write; enable leader election or run one replica" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
