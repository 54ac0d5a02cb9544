{{/* Base name of every object: the release name, unless overridden. */}}
{{- define "tailor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tailor.operator.name" -}}{{ include "tailor.fullname" . }}-operator{{- end -}}
{{- define "tailor.agent.name" -}}{{ include "tailor.fullname" . }}-agent{{- end -}}

{{/* ServiceAccount names; the admission policy matches the agent's by its full username. */}}
{{- define "tailor.operator.serviceAccount" -}}
{{- .Values.operator.serviceAccount.name | default (include "tailor.operator.name" .) -}}
{{- end -}}
{{- define "tailor.agent.serviceAccount" -}}
{{- .Values.agent.serviceAccount.name | default (include "tailor.agent.name" .) -}}
{{- end -}}

{{- define "tailor.labels" -}}
app.kubernetes.io/name: tailor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tailor
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tailor.operator.selectorLabels" -}}
app.kubernetes.io/name: tailor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
{{- define "tailor.agent.selectorLabels" -}}
app.kubernetes.io/name: tailor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "tailor.operator.labels" -}}
{{ include "tailor.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}
{{- define "tailor.agent.labels" -}}
{{ include "tailor.labels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* image: "repository:tag" (tag defaults to the chart's appVersion), or "repository@digest". */}}
{{- define "tailor.image" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository ($img.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
