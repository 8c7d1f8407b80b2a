{{/* Names, labels and the pieces every workload shares. */}}

{{- define "macronode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "macronode.fullname" -}}
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

{{- define "macronode.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "macronode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: node or gateway. */}}
{{- define "macronode.selector" -}}
app.kubernetes.io/name: {{ include "macronode.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "macronode.micro" -}}
{{- if eq .Values.profile "micronode" }}true{{ end }}
{{- end }}

{{- define "macronode.binary" -}}
{{- if include "macronode.micro" . }}micronode{{ else }}macronode{{ end }}
{{- end }}

{{- define "macronode.image" -}}
{{- $repo := ternary .Values.image.micronodeRepository .Values.image.repository (eq .Values.profile "micronode") }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "macronode.secretName" -}}
{{- default (printf "%s-auth" (include "macronode.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* Roles of the node pods. */}}
{{- define "macronode.nodeRoles" -}}
{{- $roles := .Values.node.roles }}
{{- if eq (int .Values.gateway.replicas) 0 }}
{{- $roles = append $roles "omnigate" }}
{{- end }}
{{- toJson $roles }}
{{- end }}

{{/* Environment every container gets; the config file holds the rest. */}}
{{- define "macronode.env" -}}
- name: RON_CONFIG
  value: /etc/macronode/node.toml
- name: RON_SHUTDOWN__DRAIN_DEADLINE
  value: {{ printf "%ds" (int .Values.drainDeadlineSeconds) | quote }}
- name: RON_AUTH__WRITE_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ include "macronode.secretName" . }}
      key: write-tokens
      optional: true
- name: RON_ADMIN__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "macronode.secretName" . }}
      key: admin-token
      optional: true
{{- end }}

{{/* Probes on the health plane. */}}
{{- define "macronode.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 2
  failureThreshold: 60
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 5
  failureThreshold: 2
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  failureThreshold: 3
{{- end }}

{{/* Refusals of combinations a schema cannot express. */}}
{{- define "macronode.checks" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.drainDeadlineSeconds) }}
{{- fail "terminationGracePeriodSeconds must be greater than drainDeadlineSeconds: the kubelet kills the pod when it ends" }}
{{- end }}
{{- if and (gt (int .Values.gateway.replicas) 0) (not (has "storage" .Values.node.roles)) (not (has "index" .Values.node.roles)) (not (has "mailbox" .Values.node.roles)) }}
{{- fail "gateway.replicas > 0 needs storage, index or mailbox in node.roles for the gateways to reach" }}
{{- end }}
{{- end }}
