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
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: several replicas would all write; enable leader election or run one replica" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
