{{- define "onionpost.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "onionpost.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "onionpost.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "onionpost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "tor") */}}
{{- define "onionpost.selector" -}}
app.kubernetes.io/name: {{ include "onionpost.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "onionpost.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "onionpost.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "onionpost.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* Environment every onionpost container shares. */}}
{{- define "onionpost.env" -}}
- name: ONIONPOST_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "onionpost.secretName" . }}, key: secret}}
- name: ONIONPOST_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ include "onionpost.secretName" . }}, key: database-url}}
- name: ONIONPOST_TOR_SOCKS
  value: {{ printf "%s-tor:9050" (include "onionpost.fullname" .) | quote }}
- name: ONIONPOST_LOG_FORMAT
  value: json
{{- with .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* What the onion service needs: each tor's control port (a pool with tor.replicas above one:
     every pod of the StatefulSet by its stable name) and this pod's IP as the target. */}}
{{- define "onionpost.torControlEnv" -}}
{{- $fullname := include "onionpost.fullname" . -}}
{{- $controls := list -}}
{{- range $index := until (int .Values.tor.replicas) -}}
{{- $controls = append $controls (printf "%s-tor-%d.%s-tor-pods:9051" $fullname $index $fullname) -}}
{{- end }}
- name: ONIONPOST_TOR_CONTROL
  value: {{ join "," $controls | quote }}
- name: ONIONPOST_TOR_MAX_ONIONS_PER_TOR
  value: {{ .Values.tor.maxOnionsPerTor | quote }}
- name: ONIONPOST_TOR_CONTROL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "onionpost.secretName" . }}, key: tor-control-password}}
- name: ONIONPOST_TOR_TARGET_HOST
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
{{- end -}}

{{/* remote.<service> addresses of the distributed mode. */}}
{{- define "onionpost.remoteEnv" -}}
{{- $fullname := include "onionpost.fullname" . -}}
- name: ONIONPOST_REMOTE_ONION
  value: {{ printf "http://%s-onion:50051" $fullname | quote }}
- name: ONIONPOST_REMOTE_KEYS
  value: {{ printf "http://%s-keys:50052" $fullname | quote }}
- name: ONIONPOST_REMOTE_SMTP_IN
  value: {{ printf "http://%s-smtp-in:50053" $fullname | quote }}
- name: ONIONPOST_REMOTE_IMAP
  value: {{ printf "http://%s-imap:50054" $fullname | quote }}
- name: ONIONPOST_REMOTE_QUEUE
  value: {{ printf "http://%s-queue:50051" $fullname | quote }}
- name: ONIONPOST_REMOTE_SMTP_OUT
  value: {{ printf "http://%s-smtp-out:50051" $fullname | quote }}
- name: ONIONPOST_REMOTE_PORTAL
  value: {{ printf "http://%s-portal:50051" $fullname | quote }}
- name: ONIONPOST_REMOTE_ADMIN
  value: {{ printf "http://%s-admin:50051" $fullname | quote }}
{{- if .Values.gateway.enabled }}
- name: ONIONPOST_REMOTE_GATEWAY
  value: {{ printf "http://%s-gateway:50051" $fullname | quote }}
{{- end }}
{{- end -}}

{{/* The pods the gateway runs in: the one pod in monolithic mode, its own in distributed. */}}
{{- define "onionpost.gatewayComponent" -}}
{{- if eq .Values.mode "distributed" }}gateway{{ else }}onionpost{{ end -}}
{{- end -}}

{{/* The Secret holding the gateway's DKIM key: its own, else the carrier's. */}}
{{- define "onionpost.gatewayDkimSecret" -}}
{{- if .Values.gateway.dkim.existingSecret -}}
{{- .Values.gateway.dkim.existingSecret -}}
{{- else -}}
{{- include "onionpost.secretName" . -}}
{{- end -}}
{{- end -}}

{{/* The gateway's settings, for the container that runs it. */}}
{{- define "onionpost.gatewayEnv" -}}
- name: ONIONPOST_GATEWAY_DOMAIN
  value: {{ required "gateway.domain is required with gateway.enabled" .Values.gateway.domain | quote }}
- {name: ONIONPOST_GATEWAY_LISTEN, value: "0.0.0.0:2525"}
- name: ONIONPOST_GATEWAY_DKIM_SELECTOR
  value: {{ .Values.gateway.dkim.selector | quote }}
- {name: ONIONPOST_GATEWAY_DKIM_KEY, value: /etc/onionpost/gateway-dkim/key.pem}
{{- if .Values.gateway.rspamd.enabled }}
- name: ONIONPOST_GATEWAY_RSPAMD
  value: {{ printf "%s-rspamd:11333" (include "onionpost.fullname" .) | quote }}
{{- end }}
{{- end -}}

{{/* The DKIM key as a file, mounted where ONIONPOST_GATEWAY_DKIM_KEY says. */}}
{{- define "onionpost.gatewayDkimVolume" -}}
- name: gateway-dkim
  secret:
    secretName: {{ include "onionpost.gatewayDkimSecret" . }}
    items: [{key: {{ .Values.gateway.dkim.key | quote }}, path: key.pem}]
    defaultMode: 0440
{{- end -}}

{{/* Probes of a container running `target`: gRPC health through `onionpost healthcheck`. */}}
{{- define "onionpost.probes" -}}
readinessProbe:
  exec: {command: [onionpost, healthcheck, --target, {{ . }}]}
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 5
livenessProbe:
  exec: {command: [onionpost, healthcheck, --target, {{ . }}]}
  initialDelaySeconds: 30
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{- define "onionpost.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
