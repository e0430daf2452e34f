{{/* Names: the usual helm conventions, trimmed to 63 characters (DNS label limit). */}}
{{- define "agent-registry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agent-registry.fullname" -}}
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

{{- define "agent-registry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agent-registry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-registry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agent-registry.labels" -}}
helm.sh/chart: {{ include "agent-registry.chart" . }}
{{ include "agent-registry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: agent-registry
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "agent-registry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agent-registry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agent-registry.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces served in namespaced mode: the list, or the release namespace alone. */}}
{{- define "agent-registry.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{- define "agent-registry.databaseUrlSqlite" -}}
{{- printf "sqlite+aiosqlite:///%s/agent-registry.db" (trimSuffix "/" .Values.database.sqlite.path) }}
{{- end }}

{{/* Environment shared by the migration init container and the operator. */}}
{{- define "agent-registry.databaseEnv" -}}
{{- if eq .Values.database.type "postgres" }}
- name: AGENTREG_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.postgres.existingSecret is required when database.type=postgres" .Values.database.postgres.existingSecret }}
      key: {{ .Values.database.postgres.secretKey }}
{{- else }}
- name: AGENTREG_DATABASE_URL
  value: {{ include "agent-registry.databaseUrlSqlite" . | quote }}
{{- end }}
{{- end }}

{{- define "agent-registry.webhookServiceName" -}}
{{- printf "%s-webhook" (include "agent-registry.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agent-registry.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "agent-registry.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
RBAC: exactly the calls the operator makes, nothing more (tests/install/test_rbac.py checks both ways
with the ServiceAccount's own token). Taken from the code: the operator lists and watches Agents, kopf the
other kinds, and patches their metadata (kopf's finalizer and progress annotations; the finalizer earlier
versions put on Agents is removed; CRD and namespace scanning is disabled, so no CRD or namespace access); the controller server-side-applies ConfigMaps and Deployments (an apply that
creates needs `create` as well as `patch`), reads and deletes a Deployment when spec.template goes
away, and merge-patches /status; the registry API reads an Agent to authorize a report.

Namespaced rules: granted per served namespace (Role) or everywhere (ClusterRole, allNamespaces=true).
*/}}
{{- define "agent-registry.rules.namespaced" -}}
# kopf: list+watch (handlers, indexes), patch (finalizer, annotations); get on agents: the registry
# API reads the reporting Agent's spec.serviceAccountName.
- apiGroups: [agents.singularity.dev]
  resources: [agents]
  verbs: [get, list, watch, patch]
- apiGroups: [agents.singularity.dev]
  resources: [agentbehaviors, behaviorpolicies, behaviorexperiments]
  verbs: [list, watch, patch]
# Status write-back (stats, conditions, assigned and loaded behavior): merge patches.
- apiGroups: [agents.singularity.dev]
  resources: [agents/status, agentbehaviors/status, behaviorpolicies/status, behaviorexperiments/status]
  verbs: [patch]
# One ConfigMap per Agent (behavior.lua + behavior.json), server-side applied, owned by the Agent
# (garbage-collected with it: no delete).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, patch]
# The agent Deployment rendered from Agent.spec.template: applied; read and deleted when the
# template is removed.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch, delete]
# kopf posts Kubernetes events (warnings and errors of handlers).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Leader election (--leader-elect): the operator's Lease, in the release namespace only. */}}
{{- define "agent-registry.rules.leaderElection" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end }}

{{/* Cluster-scoped rules: always a ClusterRole, whatever the watch mode. */}}
{{- define "agent-registry.rules.cluster" -}}
# The registry API authenticates agents' ServiceAccount tokens (TokenReview) and authorizes reads of
# the API with Kubernetes RBAC (SubjectAccessReview).
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
- apiGroups: [authorization.k8s.io]
  resources: [subjectaccessreviews]
  verbs: [create]
{{- end }}
