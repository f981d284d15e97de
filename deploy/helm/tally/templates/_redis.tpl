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

{{/* The Secret and key of the chart's Redis password (externalRedis's: tally.redisClient.volume). */}}
{{- define "tally.redis.secretName" -}}
{{- default (printf "%s-auth" (include "tally.redis.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "tally.redis.secretKey" -}}
{{- .Values.redis.auth.existingSecretPasswordKey -}}
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
- name: TALLY_KEY_NAMESPACE
  value: {{ .Values.keyNamespace | quote }}
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
