{{/* Names */}}
{{- define "rookery.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rookery.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rookery.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: call with (dict "ctx" $ "component" "cm") */}}
{{- define "rookery.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rookery.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "rookery.labels" -}}
{{ include "rookery.selectorLabels" . }}
helm.sh/chart: {{ include "rookery.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: rookery
{{- end -}}

{{- define "rookery.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "rookery.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rookery.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rookery.kubeDiscovery" -}}
{{- if and (eq .Values.mode "cluster") .Values.config.cluster.kubernetes.enabled -}}true{{- end -}}
{{- end -}}

{{- define "rookery.tlsSecretName" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if or .Values.tls.certManager.enabled .Values.tls.cert -}}
{{- printf "%s-tls" (include "rookery.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "rookery.dialbackSecretName" -}}
{{- default (printf "%s-dialback" (include "rookery.fullname" .)) .Values.s2s.dialbackSecret.existingSecret -}}
{{- end -}}

{{/*
HTTP upload (XEP-0363): "true" when the chart offers it. Single mode: files
on the PVC. Cluster mode: only with a volume every cm can mount (a PUT
through one cm and a GET through another read the same files).
*/}}
{{- define "rookery.upload" -}}
{{- $v := .Values -}}
{{- if and $v.upload.enabled (dig "upload" "enabled" true $v.config) -}}
{{- if or (eq $v.mode "single") $v.upload.sharedVolume.existingClaim $v.upload.sharedVolume.storageClass -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when cluster mode offers upload: the shared volume and the signing Secret. */}}
{{- define "rookery.uploadShared" -}}
{{- if and (eq .Values.mode "cluster") (include "rookery.upload" .) -}}true{{- end -}}
{{- end -}}

{{- define "rookery.uploadSecretName" -}}
{{- default (printf "%s-upload" (include "rookery.fullname" .)) .Values.upload.signingSecret.existingSecret -}}
{{- end -}}

{{- define "rookery.uploadClaimName" -}}
{{- default (printf "%s-upload" (include "rookery.fullname" .)) .Values.upload.sharedVolume.existingClaim -}}
{{- end -}}

{{/* The cms' shared upload volume and the directory in it (the server makes
it and sets its mode 0700, which it may not do on the volume's root). */}}
{{- define "rookery.uploadMountPath" -}}/var/lib/rookery-upload{{- end -}}
{{- define "rookery.uploadDirectory" -}}/var/lib/rookery-upload/files{{- end -}}

{{/* The public URL of the cms' [web] listener: config.web.public_url, or
https://<domain> with the client Service's web port unless it is 443. */}}
{{- define "rookery.webPublicUrl" -}}
{{- $v := .Values -}}
{{- $userWeb := $v.config.web | default dict -}}
{{- if $userWeb.public_url -}}
{{- $userWeb.public_url -}}
{{- else -}}
{{- $port := int $v.service.ports.web -}}
{{- ternary (printf "https://%s" $v.config.server.domain) (printf "https://%s:%d" $v.config.server.domain $port) (eq $port 443) -}}
{{- end -}}
{{- end -}}

{{/* The cluster roles the chart runs: cm, session, and s2s when federation is on. */}}
{{- define "rookery.clusterRoles" -}}
{{- if .Values.s2s.enabled -}}["cm","session","s2s"]{{- else -}}["cm","session"]{{- end -}}
{{- end -}}

{{- define "rookery.redisUrls" -}}
{{- if .Values.redis.enabled -}}
{{- list (printf "redis://%s-redis:6379" (include "rookery.fullname" .)) | toJson -}}
{{- else -}}
{{- .Values.externalRedis.urls | toJson -}}
{{- end -}}
{{- end -}}

{{/*
The configuration of one role as a map: the values' config tree with what
the chart decides laid over it. Call with (dict "ctx" $ "role" "cm").
*/}}
{{- define "rookery.configMap" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $cfg := deepCopy $v.config -}}
{{- $chart := dict "server" (dict "data_dir" "/var/lib/rookery") "http" (dict "listen" (list (printf "0.0.0.0:%d" (int $v.ports.http)))) -}}
{{- if or (eq .role "session") (eq .role "s2s") -}}
{{- $_ := set $chart "c2s" (dict "listen" (list) "direct_tls_listen" (list)) -}}
{{- $_ := set $chart "web" (dict "tls_listen" (list)) -}}
{{- else -}}
{{- $_ := set $chart "c2s" (dict "listen" (list (printf "0.0.0.0:%d" (int $v.ports.c2s))) "direct_tls_listen" (list (printf "0.0.0.0:%d" (int $v.ports.c2sTls)))) -}}
{{- $web := dict "tls_listen" (list (printf "0.0.0.0:%d" (int $v.ports.web))) -}}
{{- $userWeb := $cfg.web | default dict -}}
{{- if not $userWeb.public_url -}}
{{- $_ := set $web "public_url" (include "rookery.webPublicUrl" $ctx) -}}
{{- end -}}
{{- $_ := set $chart "web" $web -}}
{{- end -}}
{{- if include "rookery.tlsSecretName" $ctx -}}
{{- $_ := set $chart "tls" (dict "cert" "/etc/rookery/tls/tls.crt" "key" "/etc/rookery/tls/tls.key") -}}
{{- end -}}
{{- /* Federation: listened to by the s2s nodes (or the single node) only. */ -}}
{{- $s2s := dict "enabled" $v.s2s.enabled -}}
{{- if and $v.s2s.enabled (or (eq .role "s2s") (eq .role "single")) -}}
{{- $_ := set $s2s "listen" (list (printf "0.0.0.0:%d" (int $v.ports.s2s))) -}}
{{- end -}}
{{- if eq .role "s2s" -}}
{{- $_ := set $s2s "dialback_secret_file" (printf "/etc/rookery/dialback/%s" $v.s2s.dialbackSecret.existingSecretKey) -}}
{{- end -}}
{{- $_ := set $chart "s2s" $s2s -}}
{{- /* HTTP upload (XEP-0363): in a cluster every session node grants slots
for the cms' web listener (decision 0023), or nobody does. */ -}}
{{- if eq $v.mode "cluster" -}}
{{- if include "rookery.upload" $ctx -}}
{{- $up := dict "enabled" true -}}
{{- if not (dig "upload" "public_url" "" $cfg) -}}
{{- $_ := set $up "public_url" (include "rookery.webPublicUrl" $ctx) -}}
{{- end -}}
{{- if eq .role "cm" -}}
{{- $_ := set $up "directory" (include "rookery.uploadDirectory" $ctx) -}}
{{- end -}}
{{- $_ := set $chart "upload" $up -}}
{{- else -}}
{{- $_ := set $chart "upload" (dict "enabled" false) -}}
{{- end -}}
{{- else if not $v.upload.enabled -}}
{{- $_ := set $chart "upload" (dict "enabled" false) -}}
{{- end -}}
{{- if eq $v.mode "cluster" -}}
{{- $k8s := dict "namespace" $ctx.Release.Namespace "session_service" (printf "%s-session" (include "rookery.fullname" $ctx)) "cm_service" (printf "%s-cm" (include "rookery.fullname" $ctx)) -}}
{{- $_ := set $chart "cluster" (dict "grpc_listen" (printf "0.0.0.0:%d" (int $v.ports.grpc)) "redis" (dict "urls" (include "rookery.redisUrls" $ctx | fromJsonArray)) "kubernetes" $k8s) -}}
{{- else -}}
{{- $_ := unset $cfg "cluster" -}}
{{- $_ := set $chart "store" (dict "backend" "sqlite") -}}
{{- $_ := unset $cfg "store" -}}
{{- end -}}
{{- $merged := mergeOverwrite $cfg $chart -}}
{{- if eq .role "session" -}}
{{- $_ := set $merged.c2s "listen" (list) -}}
{{- $_ := set $merged.c2s "direct_tls_listen" (list) -}}
{{- end -}}
{{- toJson $merged -}}
{{- end -}}

{{/* One TOML value: string, boolean, number (integral ones as integers) or array. */}}
{{- define "rookery.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- $v | toJson -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "rookery.tomlValue" $e }}{{ end -}}]
{{- else if kindIs "map" $v -}}
{{- fail "config: tables inside arrays are not supported" -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq $v (floor $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else -}}
{{- $v -}}
{{- end -}}
{{- end -}}

{{/* A TOML table and its sub-tables: (dict "prefix" "cluster" "table" $map). */}}
{{- define "rookery.tomlTable" -}}
{{- $prefix := .prefix -}}
{{- $t := .table -}}
{{- if $prefix }}
[{{ $prefix }}]
{{- end }}
{{- range $k, $v := $t }}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ $k }} = {{ include "rookery.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := $t }}
{{- if kindIs "map" $v }}
{{ include "rookery.tomlTable" (dict "prefix" (ternary (printf "%s.%s" $prefix $k) $k (ne $prefix "")) "table" $v) }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "rookery.toml" -}}
# Rendered by the rookery Helm chart from .Values.config ({{ .role }}).
# Reference: docs/configuration.md.

{{ include "rookery.tomlTable" (dict "prefix" "" "table" (include "rookery.configMap" . | fromJson)) | trim }}
{{ end -}}

{{/* terminationGracePeriodSeconds: the drain grace plus a margin. */}}
{{- define "rookery.terminationGrace" -}}
{{- $grace := 25 -}}
{{- $drain := .Values.config.drain | default dict -}}
{{- if hasKey $drain "grace_secs" -}}
{{- $grace = int $drain.grace_secs -}}
{{- end -}}
{{- add $grace (int .Values.terminationGraceExtraSecs) -}}
{{- end -}}

{{/* topologySpreadConstraints of a role: (dict "ctx" $ "component" "cm" "own" list) */}}
{{- define "rookery.topologySpread" -}}
{{- if .own }}
topologySpreadConstraints:
{{ toYaml .own }}
{{- else if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
{{- range .ctx.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.ctx.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "rookery.selectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The rookery container's environment (cluster roles get node and advertise). */}}
{{- define "rookery.env" -}}
{{- $v := .ctx.Values -}}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  - name: POD_IP
    valueFrom:
      fieldRef:
        fieldPath: status.podIP
{{- if ne .role "single" }}
  - name: ROOKERY__CLUSTER__NODE
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: ROOKERY__CLUSTER__GRPC_ADVERTISE
    value: "$(POD_IP):{{ $v.ports.grpc }}"
{{- include "rookery.secretEnv" .ctx }}
{{- end }}
{{- if and (or (eq .role "cm") (eq .role "session")) (include "rookery.uploadShared" .ctx) }}
  - name: UPLOAD_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ include "rookery.uploadSecretName" .ctx }}
        key: {{ $v.upload.signingSecret.existingSecretKey }}
  - name: ROOKERY__UPLOAD__SECRET
    value: '"$(UPLOAD_SECRET)"'
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/*
Environment from Secrets, for the servers and the migrate Job alike (every
command reads and checks the whole configuration): the Redis URL and the
ScyllaDB password. Cluster mode only.
*/}}
{{- define "rookery.secretEnv" -}}
{{- $v := .Values -}}
{{- if and (not $v.redis.enabled) $v.externalRedis.existingSecret }}
  - name: REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ $v.externalRedis.existingSecret }}
        key: {{ $v.externalRedis.existingSecretKey }}
  - name: ROOKERY__CLUSTER__REDIS__URLS
    value: '["$(REDIS_URL)"]'
{{- end }}
{{- if $v.scylla.passwordSecret }}
  - name: SCYLLA_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ $v.scylla.passwordSecret }}
        key: {{ $v.scylla.passwordSecretKey }}
  - name: ROOKERY__STORE__SCYLLA__PASSWORD
    value: '"$(SCYLLA_PASSWORD)"'
{{- end }}
{{- end -}}

{{/* Probes on the HTTP port. */}}
{{- define "rookery.probes" -}}
startupProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /ready
    port: http
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end -}}

{{/* Volume mounts of the rookery container. */}}
{{- define "rookery.volumeMounts" -}}
volumeMounts:
  - name: config
    mountPath: /etc/rookery/config
    readOnly: true
  - name: data
    mountPath: /var/lib/rookery
  - name: tmp
    mountPath: /tmp
{{- if include "rookery.tlsSecretName" . }}
  - name: tls
    mountPath: /etc/rookery/tls
    readOnly: true
{{- end }}
{{- end -}}

{{- define "rookery.volumes" -}}
- name: config
  configMap:
    name: {{ include "rookery.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if include "rookery.tlsSecretName" . }}
- name: tls
  secret:
    secretName: {{ include "rookery.tlsSecretName" . }}
{{- end }}
{{- end -}}

{{/* Checks that fail the render with a message. */}}
{{- define "rookery.validate" -}}
{{- $v := .Values -}}
{{- if eq $v.mode "cluster" -}}
{{- if ne $v.config.store.backend "scylla" -}}
{{- fail "mode cluster needs config.store.backend = \"scylla\": the embedded SQLite store is per pod" -}}
{{- end -}}
{{- if not $v.config.store.scylla.nodes -}}
{{- fail "mode cluster needs config.store.scylla.nodes (ScyllaDB contact points, host:port)" -}}
{{- end -}}
{{- if and (not $v.redis.enabled) (not $v.externalRedis.urls) (not $v.externalRedis.existingSecret) -}}
{{- fail "mode cluster needs Redis: redis.enabled, externalRedis.urls or externalRedis.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- $maxConn := int (dig "c2s" "max_connections" 100000 $v.config) -}}
{{- if and $v.cm.autoscaling.enabled (ge (int $v.cm.autoscaling.targetConnectionsPerPod) $maxConn) -}}
{{- fail "cm.autoscaling.targetConnectionsPerPod must be below config.c2s.max_connections" -}}
{{- end -}}
{{- if and $v.tls.existingSecret (or $v.tls.certManager.enabled $v.tls.cert) -}}
{{- fail "tls: set only one of existingSecret, certManager.enabled, cert/key" -}}
{{- end -}}
{{- if and $v.tls.certManager.enabled $v.tls.cert -}}
{{- fail "tls: set only one of existingSecret, certManager.enabled, cert/key" -}}
{{- end -}}
{{- if and $v.upload.sharedVolume.existingClaim $v.upload.sharedVolume.storageClass -}}
{{- fail "upload.sharedVolume: set existingClaim or storageClass, not both" -}}
{{- end -}}
{{- if ne (empty $v.tls.cert) (empty $v.tls.key) -}}
{{- fail "tls: set both cert and key, or neither" -}}
{{- end -}}
{{- end -}}

{{/*
The pod template of a rookery role: (dict "ctx" $ "role" "cm" "spec" .Values.cm).
role is cm, session, s2s or single.
*/}}
{{- define "rookery.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $spec := .spec -}}
metadata:
  labels:
    {{- include "rookery.labels" (dict "ctx" $ctx "component" .role) | nindent 4 }}
    {{- with $spec.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $v.ports.http | quote }}
    prometheus.io/path: /metrics
    {{- with $spec.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "rookery.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ include "rookery.kubeDiscovery" $ctx | eq "true" }}
  terminationGracePeriodSeconds: {{ include "rookery.terminationGrace" $ctx }}
  enableServiceLinks: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with $spec.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $spec.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if ne .role "single" }}
  {{- with include "rookery.topologySpread" (dict "ctx" $ctx "component" .role "own" $spec.topologySpreadConstraints) | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- end }}
  containers:
    - name: rookery
      image: {{ include "rookery.image" $ctx }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        - --config
        - /etc/rookery/config/{{ .role | replace "single" "rookery" }}.toml
        - serve
        {{- if ne .role "single" }}
        - --role
        - {{ .role }}
        {{- end }}
      ports:
        {{- if or (eq .role "cm") (eq .role "single") }}
        - name: c2s
          containerPort: {{ $v.ports.c2s }}
          protocol: TCP
        - name: c2s-tls
          containerPort: {{ $v.ports.c2sTls }}
          protocol: TCP
        - name: web
          containerPort: {{ $v.ports.web }}
          protocol: TCP
        {{- end }}
        {{- if and $v.s2s.enabled (or (eq .role "s2s") (eq .role "single")) }}
        - name: s2s
          containerPort: {{ $v.ports.s2s }}
          protocol: TCP
        {{- end }}
        - name: http
          containerPort: {{ $v.ports.http }}
          protocol: TCP
        {{- if ne .role "single" }}
        - name: grpc
          containerPort: {{ $v.ports.grpc }}
          protocol: TCP
        {{- end }}
      {{- include "rookery.env" . | nindent 6 }}
      {{- include "rookery.probes" $ctx | nindent 6 }}
      resources:
        {{- toYaml $spec.resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.containerSecurityContext | nindent 8 }}
      {{- include "rookery.volumeMounts" $ctx | nindent 6 }}
        {{- if eq .role "s2s" }}
        - name: dialback
          mountPath: /etc/rookery/dialback
          readOnly: true
        {{- end }}
        {{- if and (eq .role "cm") (include "rookery.uploadShared" $ctx) }}
        - name: upload
          mountPath: {{ include "rookery.uploadMountPath" $ctx }}
        {{- end }}
  volumes:
    {{- include "rookery.volumes" $ctx | nindent 4 }}
    {{- if eq .role "s2s" }}
    - name: dialback
      secret:
        secretName: {{ include "rookery.dialbackSecretName" $ctx }}
        defaultMode: 0400
    {{- end }}
    {{- if and (eq .role "cm") (include "rookery.uploadShared" $ctx) }}
    - name: upload
      persistentVolumeClaim:
        claimName: {{ include "rookery.uploadClaimName" $ctx }}
    {{- end }}
    {{- if ne .role "single" }}
    - name: data
      emptyDir: {}
    {{- end }}
{{- end -}}
