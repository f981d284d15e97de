{{/*
The chart's Redis (names, Secret, sentinel list, the environment of its containers) and the Redis
client settings of the app and the worker, for the chart's Redis or externalRedis.
*/}}

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

{{/*
Which Redis: "sentinel" (the chart's Redis + Sentinel StatefulSet), "cluster" (the chart's Redis
Cluster StatefulSet) or "external" (externalRedis). redis.enabled=false is the older way to say
external and still wins over redis.mode.
*/}}
{{- define "tally.redis.mode" -}}
{{- if not .Values.redis.enabled -}}external{{- else -}}{{ .Values.redis.mode }}{{- end -}}
{{- end -}}
{{/* "true" when the chart runs Redis itself (sentinel or cluster), else empty. */}}
{{- define "tally.redis.internal" -}}
{{- if ne (include "tally.redis.mode" .) "external" -}}true{{- end -}}
{{- end -}}
{{/* "true" for Sentinel, the chart's or external (externalRedis.sentinels), else empty. */}}
{{- define "tally.redis.usesSentinel" -}}
{{- $m := include "tally.redis.mode" . -}}
{{- if or (eq $m "sentinel") (and (eq $m "external") .Values.externalRedis.sentinels) -}}true{{- end -}}
{{- end -}}
{{/* "true" for Redis Cluster, the chart's or external (externalRedis.cluster.nodes), else empty. */}}
{{- define "tally.redis.usesCluster" -}}
{{- $m := include "tally.redis.mode" . -}}
{{- if or (eq $m "cluster") (and (eq $m "external") .Values.externalRedis.cluster.nodes) -}}true{{- end -}}
{{- end -}}
{{/* host:port of every node of the chart's Redis Cluster, comma separated (tally's seeds). */}}
{{- define "tally.redis.clusterNodes" -}}
{{- $hosts := list -}}
{{- range $i := until (int (include "tally.redis.clusterSize" .)) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s:%d" (include "tally.redis.fullname" $) $i (include "tally.redis.domain" $) (int $.Values.redis.port)) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}
{{- define "tally.redis.clusterSize" -}}
{{- mul (int .Values.redis.cluster.masters) (add1 (int .Values.redis.cluster.replicasPerMaster)) -}}
{{- end -}}

{{/*
The Secret of the chart's Redis users (files/auth-lib.sh): one key per user, <user>-password, and
during a rotation <user>-password-previous / <user>-password-next. externalRedis's Secret:
tally.redisClient.volume.
*/}}
{{- define "tally.redis.secretName" -}}
{{- default (printf "%s-auth" (include "tally.redis.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}
{{/* Every user key the chart creates in its own Secret. */}}
{{- define "tally.redis.secretKeys" -}}
tally-password,replication-password,sentinel-password,operator-password,exporter-password,backup-password,admin-password
{{- end -}}

{{/*
A Secret volume of the users' password files, as REDIS_AUTH_DIR: only the keys of the given
users, each with its rotation companions, and the single password of chart versions before the
users (file "password") while the Secret still has it. optional: a key the Secret lacks (a
companion, the old password) is left out; a missing user the scripts need is an error there.
Args: ctx, name (the volume's), users (a list).
*/}}
{{- define "tally.redis.authVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ include "tally.redis.secretName" .ctx }}
    defaultMode: 0440
    optional: true
    items:
      {{- range .users }}
      {{- range $suffix := list "" "-previous" "-next" }}
      - key: {{ . }}-password{{ $suffix }}
        path: {{ . }}-password{{ $suffix }}
      {{- end }}
      {{- end }}
      {{- with .ctx.Values.redis.auth.existingSecretPasswordKey }}
      - key: {{ . }}
        path: password
      {{- end }}
{{- end -}}

{{/* Environment of every container that runs the chart's Redis scripts: the users' files and
the key patterns of user tally. */}}
{{- define "tally.redis.authEnv" -}}
- name: REDIS_AUTH_DIR
  value: /etc/redis-auth
- name: TALLY_KEY_PREFIX
  value: {{ .Values.keyPrefix | quote }}
- name: TALLY_KEY_NAMESPACE
  value: {{ .Values.keyNamespace | quote }}
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
{{- $mode := include "tally.redis.mode" . -}}
{{- if eq $mode "cluster" -}}
- name: TALLY_REDIS_CLUSTER
  value: {{ include "tally.redis.clusterNodes" . | quote }}
- name: TALLY_REDIS_USERNAME
  value: tally
- name: TALLY_REDIS_PASSWORD_FILE
  value: /etc/tally/redis/password
{{- else if eq $mode "sentinel" -}}
{{- /* ACL user tally on the Redis nodes and on the sentinels, with one password. */ -}}
- name: TALLY_REDIS_SENTINELS
  value: {{ include "tally.redis.sentinels" . | quote }}
- name: TALLY_REDIS_MASTER_NAME
  value: {{ .Values.redis.masterName | quote }}
- name: TALLY_REDIS_USERNAME
  value: tally
- name: TALLY_REDIS_PASSWORD_FILE
  value: /etc/tally/redis/password
- name: TALLY_SENTINEL_USERNAME
  value: tally
- name: TALLY_SENTINEL_PASSWORD_FILE
  value: /etc/tally/redis/password
{{- else -}}
{{- if .Values.externalRedis.cluster.nodes -}}
- name: TALLY_REDIS_CLUSTER
  value: {{ join "," .Values.externalRedis.cluster.nodes | quote }}
{{- if .Values.externalRedis.cluster.tls }}
- name: TALLY_REDIS_CLUSTER_TLS
  value: "true"
{{- end }}
{{- else if .Values.externalRedis.sentinels -}}
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
{{- include "tally.redisClient.tlsEnv" . }}
{{- if or (include "tally.redis.usesSentinel" .) (include "tally.redis.usesCluster" .) }}
- name: TALLY_DURABILITY
  value: {{ .Values.durability | quote }}
{{- end }}
- name: TALLY_KEY_NAMESPACE
  value: {{ .Values.keyNamespace | quote }}
{{- end -}}

{{- define "tally.redisClient.volumeMount" -}}
{{- if or (include "tally.redis.internal" .) .Values.externalRedis.existingSecret -}}
- name: redis-auth
  mountPath: /etc/tally/redis
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "tally.redisClient.volume" -}}
{{- if include "tally.redis.internal" . -}}
{{- /* Only user tally's password; Kubernetes updates the file in place on a rotation. */ -}}
- name: redis-auth
  secret:
    secretName: {{ include "tally.redis.secretName" . }}
    defaultMode: 0440
    items:
      - key: tally-password
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
{{ include "tally.redis.authEnv" . }}
{{- with include "tally.redis.tlsEnv" . }}
{{ . }}
{{- end }}
{{- end -}}

{{/* Environment of the Redis Cluster nodes and the init Job (files/cluster-lib.sh reads it). */}}
{{- define "tally.redis.clusterEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: REDIS_NODE_COUNT
  value: {{ include "tally.redis.clusterSize" . | quote }}
- name: CLUSTER_REPLICAS
  value: {{ .Values.redis.cluster.replicasPerMaster | quote }}
- name: HEADLESS_DOMAIN
  value: {{ include "tally.redis.domain" . | quote }}
- name: REDIS_PORT
  value: {{ .Values.redis.port | quote }}
{{ include "tally.redis.authEnv" . }}
{{- with include "tally.redis.tlsEnv" . }}
{{ . }}
{{- end }}
{{- end -}}
