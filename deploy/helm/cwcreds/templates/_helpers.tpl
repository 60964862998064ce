{{/* The chart's name, and the release's object names. */}}
{{- define "cwcreds.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cwcreds.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cwcreds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cwcreds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cwcreds.labels" -}}
{{ include "cwcreds.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cwcreds.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* A profile's variable infix: upper-case, '-' as '_'. */}}
{{- define "cwcreds.envName" -}}
{{- . | upper | replace "-" "_" -}}
{{- end -}}

{{/* CWCREDS_LISTEN_ADDR: loopback first (what commands on the node use),
then the pod identity addresses. Never the node's IP: Prometheus scrapes
the metrics-only listener there (CWCREDS_METRICS_LISTEN_ADDR). */}}
{{- define "cwcreds.listenAddr" -}}
{{- $p := int .Values.port -}}
{{- $addrs := list (printf "127.0.0.1:%d" $p) -}}
{{- with .Values.podIdentity -}}
{{- if .enabled -}}
{{- $addrs = append $addrs (printf "%s:%d" .ipv4 $p) -}}
{{- if .ipv6 }}{{ $addrs = append $addrs (printf "[fd00:ec2::23]:%d" $p) }}{{ end -}}
{{- if .legacyECS }}{{ $addrs = append $addrs (printf "169.254.170.2:%d" $p) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/* Whether some profile mounts a Secret. */}}
{{- define "cwcreds.anySecret" -}}
{{- range .Values.profiles }}{{ if .tokenSecret }}true{{ end }}{{ end -}}
{{- end -}}

{{/* CWCREDS_PROFILES: the profiles' names, comma-separated. */}}
{{- define "cwcreds.profileNames" -}}
{{- $names := list -}}
{{- range .Values.profiles }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end -}}

{{/* The names of the profiles served to pods: workload-oidc, or ALLOW_PODS. */}}
{{- define "cwcreds.podProfiles" -}}
{{- $names := list -}}
{{- range .Values.profiles -}}
{{- $allow := toString (dig "ALLOW_PODS" "" (.settings | default dict)) -}}
{{- if or (eq .source "workload-oidc") (eq $allow "true") (eq $allow "1") -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
