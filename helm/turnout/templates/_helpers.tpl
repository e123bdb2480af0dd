{{- define "turnout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "turnout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "turnout.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "turnout.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "turnout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turnout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "turnout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "turnout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "turnout.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "turnout.servePort" -}}
{{ dig "server" "port" 8000 .Values.turnout }}
{{- end }}

{{/* Ray's ports that something outside the release reaches: the head's dashboard (the KubeRay
     operator) and every pod's metrics export (Prometheus). */}}
{{- define "turnout.dashboardPort" -}}8265{{- end }}
{{- define "turnout.metricsPort" -}}8080{{- end }}

{{/* The release's Ray pods, head and workers (their templates' labels; KubeRay adds its own). */}}
{{- define "turnout.rayPodSelector" -}}
matchLabels: {{- include "turnout.selectorLabels" . | nindent 2 }}
matchExpressions:
  - {key: app.kubernetes.io/component, operator: In, values: [head, worker]}
{{- end }}

{{/* The Secret holding the Ray cluster's token under the key auth_token (the key KubeRay reads). */}}
{{- define "turnout.rayAuthSecretName" -}}
{{- .Values.rayAuth.existingSecret | default (printf "%s-ray-auth" (include "turnout.fullname" .)) }}
{{- end }}

{{/* The created Secret's auth_token, base64: rayAuth.token when given, else the token of the
     Secret already installed (`existing`, from lookup; empty when rendered offline), so an upgrade
     keeps it, else a new one. Pods of one cluster must share it. */}}
{{- define "turnout.rayAuthTokenData" -}}
{{- if .root.Values.rayAuth.token }}
{{- .root.Values.rayAuth.token | b64enc }}
{{- else }}
{{- dig "data" "auth_token" (randAlphaNum 48 | b64enc) (.existing | default dict) }}
{{- end }}
{{- end }}

{{/* Fails the render on Ray token settings KubeRay or Ray would reject later, on the cluster. */}}
{{- define "turnout.checkRayAuth" -}}
{{- with .Values.rayAuth }}
{{- if and .enabled .token .existingSecret }}
{{- fail "rayAuth: set token or existingSecret, not both" }}
{{- end }}
{{- if and .enabled (semverCompare "<2.52.0" $.Values.rayVersion) }}
{{- fail (printf "rayAuth needs Ray 2.52.0 or later (rayVersion is %s): set rayAuth.enabled=false or a newer rayVersion" $.Values.rayVersion) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret whose keys become environment variables; empty when there is none. */}}
{{- define "turnout.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if or .Values.secrets.hfToken .Values.secrets.apiKeys .Values.secrets.cloudApiKeys }}
{{- include "turnout.fullname" . }}-secrets
{{- end }}
{{- end }}

{{- define "turnout.cacheClaim" -}}
{{- if .Values.modelCache.existingClaim }}
{{- .Values.modelCache.existingClaim }}
{{- else if .Values.modelCache.create }}
{{- include "turnout.fullname" . }}-model-cache
{{- end }}
{{- end }}

{{/* Fails the render when a cloud provider's key variable has no value from any Secret. */}}
{{- define "turnout.checkProviderKeys" -}}
{{- if not .Values.secrets.existingSecret }}
{{- range $i, $p := .Values.turnout.cloud_providers | default list }}
{{- if and $p.api_key_env (not (hasKey $.Values.secrets.cloudApiKeys $p.api_key_env)) }}
{{- fail (printf "turnout.cloud_providers[%d] (%s) reads its key from %s: set secrets.cloudApiKeys.%s or secrets.existingSecret" $i $p.name $p.api_key_env $p.api_key_env) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Serve config: the shape of `turnout build-config` (service/cli/serve.py: serve_config). */}}
{{- define "turnout.serveConfig" -}}
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: {{ include "turnout.servePort" . }}
applications:
  - name: turnout
    route_prefix: /
    import_path: service.graph:app_builder
    args:
      turnout: {{ toJson .Values.turnout }}
{{- end }}

{{/* Environment, mounts, volumes and probes shared by the head and the workers. */}}
{{- define "turnout.env" -}}
- name: TURNOUT_HOME
  value: {{ printf "%s/store" .Values.modelCache.mountPath | quote }}
- name: HF_HOME
  value: {{ printf "%s/huggingface" .Values.modelCache.mountPath | quote }}
- name: TURNOUT_PLATFORM
  value: {{ .Values.platform | quote }}
{{- $server := .Values.turnout.server | default dict }}
{{- if or (not (hasKey $server "haproxy")) $server.haproxy }}
{{- /* Ray Serve's high-throughput mode, read by every Ray process at start: HAProxy in front of
     the entry replicas (the fast path), gRPC between deployments, the app on the replica's loop. */}}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
{{- /* A request whose entry replica closed without answering (its pod lost) goes to another;
     HAProxy reads the whole request first so that it can send it again (service/cli/serve.py). */}}
- name: RAY_SERVE_HAPROXY_RETRY_ON
  value: "conn-failure empty-response\n    option http-buffer-request"
{{- /* HAProxy shows the ingress request router (routing: prefix_affinity, kv_aware) the request's
     body, and waits up to 30 s for its choice (service/serve_overrides/environment.py). */}}
- name: RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY
  value: "1"
- name: RAY_SERVE_HAPROXY_INGRESS_REQUEST_ROUTER_TIMEOUT_S
  value: "30"
{{- end }}
{{- if and .Values.rayAuth.enabled (eq .Values.rayAuth.via "env") }}
{{- /* What KubeRay's authOptions sets, for an operator without it: every Ray process reads them. */}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "turnout.rayAuthSecretName" . }}, key: auth_token}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "turnout.envFrom" -}}
{{- with include "turnout.secretName" . }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{- define "turnout.mounts" -}}
- name: model-cache
  mountPath: {{ .Values.modelCache.mountPath }}
- name: dshm
  mountPath: /dev/shm
{{- end }}

{{- define "turnout.volumes" -}}
- name: model-cache
{{- with include "turnout.cacheClaim" . }}
  persistentVolumeClaim:
    claimName: {{ . }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.sharedMemorySize }}
{{- end }}

{{- define "turnout.podSpec" -}}
securityContext: {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
volumes: {{- include "turnout.volumes" .root | nindent 2 }}
{{- end }}

{{/* A group's resources with nvidia.com/gpu added to requests and limits. */}}
{{- define "turnout.resources" -}}
{{- $res := deepCopy (.resources | default dict) }}
{{- if .gpus }}
{{- $gpu := dict "nvidia.com/gpu" .gpus }}
{{- $_ := set $res "requests" (merge (deepCopy $gpu) ($res.requests | default dict)) }}
{{- $_ := set $res "limits" (merge (deepCopy $gpu) ($res.limits | default dict)) }}
{{- end }}
{{- toYaml $res }}
{{- end }}
