{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "tally.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: the release name, plus the chart name when it differs.
At most 52 characters, so that suffixed names ("-test-check") stay valid DNS labels (<= 63).
*/}}
{{- define "tally.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Redis names: <= 46 characters, so "-headless" / "-sentinel" Services stay <= 63. */}}
{{- define "tally.redis.fullname" -}}
{{- printf "%s-redis" (include "tally.fullname" . | trunc 40 | trimSuffix "-") -}}
{{- end -}}
{{- define "tally.redis.headless" -}}
{{- printf "%s-headless" (include "tally.redis.fullname" .) -}}
{{- end -}}
{{- define "tally.redis.sentinelService" -}}
{{- printf "%s-sentinel" (include "tally.redis.fullname" .) -}}
{{- end -}}
{{/* The DNS domain of the Redis pods: <pod>.<this> */}}
{{- define "tally.redis.domain" -}}
{{- printf "%s.%s.svc.%s" (include "tally.redis.headless" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{- define "tally.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels -------------------------------------------------------------------------------- */}}

{{/* Labels of every resource, without name / instance / component (pods add their selector labels). */}}
{{- define "tally.commonLabels" -}}
helm.sh/chart: {{ include "tally.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tally
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of a resource that is not a pod: name, instance and the common labels. */}}
{{- define "tally.labels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "tally.commonLabels" . }}
{{- end -}}

{{- define "tally.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: app
{{- end -}}

{{- define "tally.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "tally.web.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: web
{{- end -}}

{{- define "tally.worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "tally.postgresql.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgresql
{{- end -}}

{{- define "tally.test.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end -}}

{{/* Images: repository@digest when a digest is given, else repository:tag. */}}
{{- define "tally.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString (default .default .image.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "tally.image" -}}
{{- include "tally.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "tally.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tally.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The web tier: <fullname>-web (<= 56 characters; "-web-admin" <= 62). */}}
{{- define "tally.web.fullname" -}}
{{- printf "%s-web" (include "tally.fullname" .) -}}
{{- end -}}

{{- define "tally.web.serviceAccountName" -}}
{{- if .Values.web.serviceAccount.create -}}
{{- default (include "tally.web.fullname" .) .Values.web.serviceAccount.name -}}
{{- else -}}
{{- required "web.serviceAccount.name is required when web.serviceAccount.create is false" .Values.web.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The jobs tier's worker: <fullname>-worker (<= 57 characters; "-worker-admin" <= 63). */}}
{{- define "tally.worker.fullname" -}}
{{- printf "%s-worker" (include "tally.fullname" . | trunc 50 | trimSuffix "-") -}}
{{- end -}}

{{- define "tally.worker.serviceAccountName" -}}
{{- if .Values.jobs.worker.serviceAccount.create -}}
{{- default (include "tally.worker.fullname" .) .Values.jobs.worker.serviceAccount.name -}}
{{- else -}}
{{- required "jobs.worker.serviceAccount.name is required when jobs.worker.serviceAccount.create is false" .Values.jobs.worker.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The chart's Postgres: <= 51 characters, so the StatefulSet's controller-revision-hash label and
"-auth" stay valid.
*/}}
{{- define "tally.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "tally.fullname" . | trunc 40 | trimSuffix "-") -}}
{{- end -}}

{{/* The app Service's type: service.type, else LoadBalancer, or ClusterIP behind web. */}}
{{- define "tally.serviceType" -}}
{{- if .Values.service.type -}}
{{- .Values.service.type -}}
{{- else if .Values.web.enabled -}}
ClusterIP
{{- else -}}
LoadBalancer
{{- end -}}
{{- end -}}

{{/* The app Service's in-cluster URL. */}}
{{- define "tally.apiUrl" -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "tally.fullname" .) .Release.Namespace .Values.clusterDomain .Values.service.port -}}
{{- end -}}

{{/* True ("true") when the Ingress or HTTPRoute sends web.apiPathPrefix straight to the app. */}}
{{- define "tally.web.directApi" -}}
{{- if and .Values.web.enabled .Values.web.apiPathPrefix (or .Values.ingress.enabled .Values.httpRoute.enabled) -}}
true
{{- end -}}
{{- end -}}

{{/*
True ("true") when the app's port admits only web (and networkPolicy.ingressControllerFrom): web is
on and the app's Service is ClusterIP. A user who makes the app's Service public with web on keeps
its port open to all.
*/}}
{{- define "tally.web.apiPrivate" -}}
{{- if and .Values.web.enabled (eq (include "tally.serviceType" .) "ClusterIP") -}}
true
{{- end -}}
{{- end -}}

{{/* Redis auth ---------------------------------------------------------------------------- */}}

{{- define "tally.redis.secretName" -}}
{{- default (printf "%s-auth" (include "tally.redis.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "tally.redis.secretKey" -}}
{{- .Values.redis.auth.existingSecretPasswordKey -}}
{{- end -}}

{{/*
The base64 password of the chart-made Secret: the one already in the cluster on upgrades
(`lookup`), else a new random one. Computed once per render and cached, so the Secret and the
checksum annotations agree.
*/}}
{{- define "tally.redis.passwordB64" -}}
{{- $cache := .Values.redis.auth -}}
{{- if not (hasKey $cache "__password") -}}
{{- $key := include "tally.redis.secretKey" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "tally.redis.secretName" .) -}}
{{- $pw := "" -}}
{{- if and $existing (hasKey $existing "data") (hasKey (default dict $existing.data) $key) -}}
{{- $pw = index $existing.data $key -}}
{{- else -}}
{{- $pw = randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- $_ := set $cache "__password" $pw -}}
{{- end -}}
{{- get $cache "__password" -}}
{{- end -}}

{{/*
A checksum of the Redis credentials, in pod annotations so that a changed password rolls the
pods on `helm upgrade`. For an existing Secret it is computed from the Secret's resourceVersion in
the cluster (constant under `helm template`).
*/}}
{{- define "tally.redis.authChecksum" -}}
{{- if and .Values.redis.enabled (not .Values.redis.auth.existingSecret) -}}
{{- include "tally.redis.passwordB64" . | sha256sum -}}
{{- else -}}
{{- $name := ternary .Values.redis.auth.existingSecret .Values.externalRedis.existingSecret .Values.redis.enabled -}}
{{- if $name -}}
{{- $s := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- /* the Secret's resourceVersion changes with its data; no hash of a (maybe weak) password */ -}}
{{- printf "%s/%v" $name (dig "metadata" "resourceVersion" "" (default dict $s)) | sha256sum -}}
{{- else -}}
{{- "none" | sha256sum -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* host:port of every sentinel of the chart's Redis, comma separated. */}}
{{- define "tally.redis.sentinels" -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.redis.replicas) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s:%d" (include "tally.redis.fullname" $) $i (include "tally.redis.domain" $) (int $.Values.redis.sentinel.port)) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/*
The Redis client settings of tally's Redis users (the app and the worker): environment, volume
mount and volume. The password files come from the chart's Redis Secret or externalRedis's.
*/}}
{{- define "tally.redisClient.env" -}}
{{- if .Values.redis.enabled -}}
- name: TALLY_REDIS_SENTINELS
  value: {{ include "tally.redis.sentinels" . | quote }}
- name: TALLY_REDIS_MASTER_NAME
  value: {{ .Values.redis.masterName | quote }}
- name: TALLY_REDIS_PASSWORD_FILE
  value: /etc/tally/redis/password
- name: TALLY_SENTINEL_PASSWORD_FILE
  value: /etc/tally/redis/password
{{- else -}}
{{- if .Values.externalRedis.sentinels -}}
- name: TALLY_REDIS_SENTINELS
  value: {{ join "," .Values.externalRedis.sentinels | quote }}
- name: TALLY_REDIS_MASTER_NAME
  value: {{ .Values.externalRedis.masterName | quote }}
{{- else -}}
- name: TALLY_REDIS_URL
  value: {{ .Values.externalRedis.url | quote }}
{{- end }}
{{- with .Values.externalRedis.username }}
- name: TALLY_REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if .Values.externalRedis.existingSecret }}
- name: TALLY_REDIS_PASSWORD_FILE
  value: /etc/tally/redis/password
{{- if .Values.externalRedis.existingSecretSentinelPasswordKey }}
- name: TALLY_SENTINEL_PASSWORD_FILE
  value: /etc/tally/redis/sentinel-password
{{- end }}
{{- end }}
{{- end }}
{{- if or .Values.redis.enabled .Values.externalRedis.sentinels }}
- name: TALLY_DURABILITY
  value: {{ .Values.durability | quote }}
{{- end }}
{{- end -}}

{{- define "tally.redisClient.volumeMount" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.existingSecret -}}
- name: redis-auth
  mountPath: /etc/tally/redis
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "tally.redisClient.volume" -}}
{{- if .Values.redis.enabled -}}
- name: redis-auth
  secret:
    secretName: {{ include "tally.redis.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "tally.redis.secretKey" . }}
        path: password
{{- else if .Values.externalRedis.existingSecret -}}
- name: redis-auth
  secret:
    secretName: {{ .Values.externalRedis.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.externalRedis.existingSecretPasswordKey }}
        path: password
      {{- with .Values.externalRedis.existingSecretSentinelPasswordKey }}
      - key: {{ . }}
        path: sentinel-password
      {{- end }}
{{- end -}}
{{- end -}}

{{/* Postgres (the jobs tier) -------------------------------------------------------------- */}}

{{/* The Secret and key holding the database password; empty name: no password. */}}
{{- define "tally.database.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (printf "%s-auth" (include "tally.postgresql.fullname" .)) .Values.postgresql.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "tally.database.secretKey" -}}
{{- if .Values.postgresql.enabled -}}
{{- .Values.postgresql.auth.existingSecretPasswordKey -}}
{{- else -}}
{{- .Values.externalDatabase.existingSecretPasswordKey -}}
{{- end -}}
{{- end -}}

{{/*
The base64 password of the chart-made Postgres Secret: the one in the cluster on upgrades
(`lookup`), else a new random one; cached per render like the Redis password.
*/}}
{{- define "tally.postgresql.passwordB64" -}}
{{- $cache := .Values.postgresql.auth -}}
{{- if not (hasKey $cache "__password") -}}
{{- $key := .Values.postgresql.auth.existingSecretPasswordKey -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "tally.database.secretName" .) -}}
{{- $pw := "" -}}
{{- if and $existing (hasKey $existing "data") (hasKey (default dict $existing.data) $key) -}}
{{- $pw = index $existing.data $key -}}
{{- else -}}
{{- $pw = randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- $_ := set $cache "__password" $pw -}}
{{- end -}}
{{- get $cache "__password" -}}
{{- end -}}

{{/*
A checksum of the database credentials for the API pods' annotations, so that a new password
rolls them (computed like tally.redis.authChecksum).
*/}}
{{- define "tally.database.authChecksum" -}}
{{- if and .Values.postgresql.enabled (not .Values.postgresql.auth.existingSecret) -}}
{{- include "tally.postgresql.passwordB64" . | sha256sum -}}
{{- else -}}
{{- $name := include "tally.database.secretName" . -}}
{{- if $name -}}
{{- $s := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- printf "%s/%v" $name (dig "metadata" "resourceVersion" "" (default dict $s)) | sha256sum -}}
{{- else -}}
{{- "none" | sha256sum -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* TALLY_DATABASE_URL: postgres://USER@HOST:PORT/DATABASE, never with the password. */}}
{{- define "tally.database.url" -}}
{{- if .Values.postgresql.enabled -}}
{{- $host := printf "%s.%s.svc.%s" (include "tally.postgresql.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- printf "postgres://%s@%s:%d/%s" (urlquery .Values.postgresql.auth.username) $host (int .Values.postgresql.port) (urlquery .Values.postgresql.auth.database) -}}
{{- else -}}
{{- $d := .Values.externalDatabase -}}
{{- $host := ternary (printf "[%s]" $d.host) $d.host (contains ":" $d.host) -}}
{{- printf "postgres://%s@%s:%d/%s" (urlquery $d.user) $host (int $d.port) (urlquery $d.database) -}}
{{- end -}}
{{- end -}}

{{/* Scheduling ---------------------------------------------------------------------------- */}}

{{/* affinity: the user's, else pod anti-affinity by hostname (soft or hard). Args: ctx, mode, labels. */}}
{{- define "tally.affinity" -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- .labels | nindent 10 }}
{{- else if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .labels | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* topologySpreadConstraints: the user's, else over nodes and zones, best effort. */}}
{{- define "tally.topologySpread" -}}
{{- if .constraints -}}
{{ toYaml .constraints }}
{{- else -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- .labels | nindent 6 }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- .labels | nindent 6 }}
{{- end -}}
{{- end -}}

{{/* Checks that the schema cannot express. */}}
{{- define "tally.validate" -}}
{{- $delay := .Values.shutdownDelay | toString -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.redis.enabled (gt (int .Values.redis.sentinel.quorum) (int .Values.redis.replicas)) -}}
{{- fail "redis.sentinel.quorum must not exceed redis.replicas" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.sentinels) -}}
{{- fail "redis.enabled is false: set externalRedis.url or externalRedis.sentinels" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)" -}}
{{- end -}}
{{- if .Values.web.enabled -}}
{{- if and .Values.web.autoscaling.enabled (gt (int .Values.web.autoscaling.minReplicas) (int .Values.web.autoscaling.maxReplicas)) -}}
{{- fail "web.autoscaling.minReplicas must not exceed web.autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (include "tally.web.apiPrivate" .) (include "tally.web.directApi" .) (not .Values.networkPolicy.ingressControllerFrom) -}}
{{- fail (printf "web.enabled with an Ingress or HTTPRoute sends %s straight to the app, whose NetworkPolicy then admits only the web pods: set networkPolicy.ingressControllerFrom to the ingress controller's pods (e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]), or web.apiPathPrefix=\"\" to send everything through web" .Values.web.apiPathPrefix) -}}
{{- end -}}
{{- include "tally.checkGrace" (dict "prefix" "web." "delay" .Values.web.shutdownDelay "timeout" .Values.web.shutdownTimeout "grace" .Values.web.terminationGracePeriodSeconds) -}}
{{- end -}}
{{- if .Values.jobs.enabled -}}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.host -}}
{{- fail "externalDatabase.host is set but postgresql.enabled is true: set postgresql.enabled=false to use the external database" -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.host) -}}
{{- fail "jobs.enabled with postgresql.enabled=false: set externalDatabase.host (and externalDatabase.existingSecret)" -}}
{{- end -}}
{{- $keda := .Values.jobs.keda -}}
{{- if and $keda.enabled (gt (int $keda.minReplicaCount) (int $keda.maxReplicaCount)) -}}
{{- fail "jobs.keda.minReplicaCount must not exceed jobs.keda.maxReplicaCount" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Seconds of a simple humantime duration (500ms, 5s, 2m, 1h, or sums like 1m30s), as a float. */}}
{{- define "tally.seconds" -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" (toString .) -1 -}}
{{- $n := float64 (regexFind "^[0-9]+" .) -}}
{{- if hasSuffix "ms" . -}}{{- $total = addf $total (divf $n 1000) -}}
{{- else if hasSuffix "s" . -}}{{- $total = addf $total $n -}}
{{- else if hasSuffix "m" . -}}{{- $total = addf $total (mulf $n 60) -}}
{{- else if hasSuffix "h" . -}}{{- $total = addf $total (mulf $n 3600) -}}
{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{- define "tally.validateShutdown" -}}
{{- include "tally.checkGrace" (dict "prefix" "" "delay" .Values.shutdownDelay "timeout" .Values.shutdownTimeout "grace" .Values.terminationGracePeriodSeconds) -}}
{{- end -}}

{{/* The grace period must exceed the shutdown delay + drain. Args: prefix, delay, timeout, grace. */}}
{{- define "tally.checkGrace" -}}
{{- $need := addf (include "tally.seconds" .delay | float64) (include "tally.seconds" .timeout | float64) -}}
{{- if le (float64 .grace) $need -}}
{{- fail (printf "%sterminationGracePeriodSeconds (%v) must exceed %sshutdownDelay + %sshutdownTimeout (%v s)" .prefix .grace .prefix .prefix $need) -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the redis and sentinel containers (files/redis-lib.sh reads it). */}}
{{- define "tally.redis.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: REDIS_NODE_COUNT
  value: {{ .Values.redis.replicas | quote }}
- name: HEADLESS_DOMAIN
  value: {{ include "tally.redis.domain" . | quote }}
- name: REDIS_PORT
  value: {{ .Values.redis.port | quote }}
- name: SENTINEL_PORT
  value: {{ .Values.redis.sentinel.port | quote }}
- name: MASTER_NAME
  value: {{ .Values.redis.masterName | quote }}
- name: REDIS_PASSWORD_FILE
  value: /etc/redis-auth/password
{{- end -}}
