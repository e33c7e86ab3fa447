{{/* Names and labels, the usual Helm shape. */}}
{{- define "gocare-voice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gocare-voice.fullname" -}}
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

{{- define "gocare-voice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "gocare-voice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gocare-voice
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "worker") */}}
{{- define "gocare-voice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gocare-voice.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gocare-voice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "gocare-voice.secretName" -}}
{{- if .Values.secret.existingSecret }}{{ .Values.secret.existingSecret }}{{ else }}{{ include "gocare-voice.fullname" . }}{{ end }}
{{- end }}

{{/* True ("true") when the chart has a Secret to give the containers: an existing one, or its own values. */}}
{{- define "gocare-voice.hasSecret" -}}
{{- if or .Values.secret.existingSecret (gt (len .Values.secret.values) 0) }}true{{ end }}
{{- end }}

{{/*
The chart's refusals: each is one line naming the value to change. Called from every template (Helm renders
them all), so `helm template` and `helm install` stop before anything is created.
*/}}
{{- define "gocare-voice.validate" -}}
{{- $config := .Values.config | default dict }}
{{- $env := lower (toString (index $config "GOCARE_ENV" | default "development")) }}
{{- if not (has $env (list "development" "production")) }}
{{- fail (printf "config.GOCARE_ENV: %q is neither development nor production" (index $config "GOCARE_ENV")) }}
{{- end }}
{{- range $key, $value := $config }}
{{- if has $key (list "LIVEKIT_API_KEY" "LIVEKIT_API_SECRET" "LLM_API_KEY" "GROQ_API_KEY" "DEEPGRAM_API_KEY" "GOCARE_TTS_API_KEY" "AZURE_SPEECH_KEY" "GOCARE_AUTH_JWT_SECRET" "GOCARE_OPERATOR_TOKEN" "GOCARE_CALL_WEBHOOK_SECRET" "GOCARE_DATABASE_URL") }}
{{- fail (printf "config.%s: a key belongs in the Secret (secret.values or secret.existingSecret), not in the ConfigMap" $key) }}
{{- end }}
{{- if has $key (list "GOCARE_WORKER_DRAIN_TIMEOUT") }}
{{- fail (printf "config.%s: set worker.drainTimeout instead (the chart checks it against worker.terminationGracePeriodSeconds)" $key) }}
{{- end }}
{{- if has $key (list "GOCARE_WORKER_PORT" "GOCARE_WORKER_METRICS_PORT" "PORT" "GOCARE_METRICS_PORT") }}
{{- fail (printf "config.%s: set the port through worker.healthPort, worker.metricsPort, tokenService.port or tokenService.metricsPort (the probes and container ports use them)" $key) }}
{{- end }}
{{- if not (kindIs "string" $value) }}
{{- fail (printf "config.%s: quote the value (%v): environment variables are strings" $key $value) }}
{{- end }}
{{- end }}
{{- if and (eq $env "production") (not (include "gocare-voice.hasSecret" .)) }}
{{- fail "config.GOCARE_ENV=production needs a Secret with the keys: set secret.existingSecret to the name of your Secret (LIVEKIT_API_KEY, LIVEKIT_API_SECRET, the provider keys, GOCARE_DATABASE_URL) or give them in secret.values" }}
{{- end }}
{{- if and (eq $env "production") (not .Values.secret.existingSecret) (not (and (index .Values.secret.values "LIVEKIT_API_KEY") (index .Values.secret.values "LIVEKIT_API_SECRET"))) }}
{{- fail "secret.values: GOCARE_ENV=production needs LIVEKIT_API_KEY and LIVEKIT_API_SECRET in it (or a Secret named in secret.existingSecret)" }}
{{- end }}
{{- if and (eq $env "production") (not .Values.secret.existingSecret) (not (index .Values.secret.values "GOCARE_DATABASE_URL")) }}
{{- fail "secret.values: GOCARE_ENV=production needs GOCARE_DATABASE_URL in it (the PostgreSQL of the user directory and call records)" }}
{{- end }}
{{- if and (eq $env "production") (not (index $config "LIVEKIT_URL")) }}
{{- fail "config.LIVEKIT_URL: required when GOCARE_ENV=production (your LiveKit Cloud project's wss:// URL, or your livekit-server's)" }}
{{- end }}
{{- if .Values.worker.enabled }}
{{- $drain := .Values.worker.drainTimeout | int }}
{{- $grace := .Values.worker.terminationGracePeriodSeconds | int }}
{{- if lt $drain 1 }}
{{- fail (printf "worker.drainTimeout: %v is not a number of seconds of at least 1" .Values.worker.drainTimeout) }}
{{- end }}
{{- if gt $drain $grace }}
{{- fail (printf "worker.drainTimeout (GOCARE_WORKER_DRAIN_TIMEOUT) is %d s, longer than worker.terminationGracePeriodSeconds (%d s): Kubernetes would kill draining workers mid-call; raise the grace period to at least %d or shorten the drain" $drain $grace $drain) }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.worker.metricsPort) (int .Values.worker.healthPort)) }}
{{- fail "worker.metricsPort: the same port as worker.healthPort; use another one" }}
{{- end }}
{{- end }}
{{- if and .Values.tokenService.enabled (eq (int .Values.tokenService.port) (int .Values.tokenService.metricsPort)) }}
{{- fail "tokenService.metricsPort: the same port as tokenService.port; use another one" }}
{{- end }}
{{- end }}

{{/* The ConfigMap's data (also the migration hook's own copy). */}}
{{- define "gocare-voice.configData" -}}
{{- range $key, $value := .Values.config }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- if include "gocare-voice.devDatabase" . }}
GOCARE_DATABASE_URL: {{ include "gocare-voice.devDatabase" . | quote }}
{{- end }}
{{- end }}

{{/*
Development without a database URL in the Secret: a SQLite file in the pod's /tmp (the root filesystem is
read-only), so the pods start; each pod then has its own empty user directory (NOTES.txt says so). In
production the URL must come from the Secret.
*/}}
{{- define "gocare-voice.devDatabase" -}}
{{- $env := lower (toString (index .Values.config "GOCARE_ENV" | default "development")) }}
{{- if and (eq $env "development") (not .Values.secret.existingSecret) (not (index .Values.secret.values "GOCARE_DATABASE_URL")) -}}
sqlite:////tmp/gocare-users.db
{{- end }}
{{- end }}

{{/* The Secret's data when the chart makes it. */}}
{{- define "gocare-voice.secretData" -}}
{{- range $key, $value := .Values.secret.values }}
{{ $key }}: {{ toString $value | b64enc | quote }}
{{- end }}
{{- end }}

{{/* Environment of every container: the ConfigMap and the Secret (name given by "configMap"). */}}
{{- define "gocare-voice.envFrom" -}}
- configMapRef:
    name: {{ .configMap }}
{{- if include "gocare-voice.hasSecret" .root }}
- secretRef:
    name: {{ .secret }}
{{- end }}
{{- end }}

{{/* The pod-level part every pod shares. */}}
{{- define "gocare-voice.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{- define "gocare-voice.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: ""
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "gocare-voice.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* One step of the migration Job: (dict "root" $ "args" (list "calls" "migrate") "hook" <copies' name>) */}}
{{- define "gocare-voice.migrationContainer" -}}
{{- $root := .root }}
- name: {{ join "-" .args | lower | replace "_" "-" | trunc 63 | trimSuffix "-" }}
  image: {{ include "gocare-voice.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    {{- toYaml .args | nindent 4 }}
  envFrom:
    {{- include "gocare-voice.envFrom" (dict "root" $root "configMap" .hook "secret" (ternary $root.Values.secret.existingSecret .hook (not (empty $root.Values.secret.existingSecret)))) | nindent 4 }}
  resources:
    {{- toYaml $root.Values.migration.resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "gocare-voice.tmpMount" $root | nindent 4 }}
{{- end }}
