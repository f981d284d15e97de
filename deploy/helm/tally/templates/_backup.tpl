{{/*
The backup container of the Redis backup CronJob (redis-backup.yaml): files/backup-redis.sh in the
Redis image. It names the nodes as the Redis pods do (files/redis-lib.sh): from pod 0's name, and
connects as ACL user backup (the volume "auth": that user's key of the Redis Secret only).
*/}}
{{- define "tally.redis.backupContainer" -}}
{{- $ := .ctx -}}
{{- $b := $.Values.redis.backup -}}
- name: backup
  image: {{ include "tally.imageRef" (dict "image" $.Values.redis.image "default" "") | quote }}
  imagePullPolicy: {{ $.Values.redis.image.pullPolicy }}
  command: ["sh", "{{ .scripts }}/backup-redis.sh"]
  env:
    - name: POD_NAME
      value: {{ printf "%s-0" (include "tally.redis.fullname" $) | quote }}
    - name: REDIS_NODE_COUNT
      value: {{ $.Values.redis.replicas | quote }}
    - name: HEADLESS_DOMAIN
      value: {{ include "tally.redis.domain" $ | quote }}
    - name: REDIS_PORT
      value: {{ $.Values.redis.port | quote }}
    - name: SENTINEL_PORT
      value: {{ $.Values.redis.sentinel.port | quote }}
    - name: MASTER_NAME
      value: {{ $.Values.redis.masterName | quote }}
    # ACL user backup (files/auth-lib.sh) on the Redis nodes and the sentinels: its password only.
    - name: REDIS_AUTH_DIR
      value: /etc/redis-auth
    - name: BACKUP_DIR
      value: /backup
    - name: BACKUP_PREFIX
      value: {{ $b.prefix | quote }}
    - name: BACKUP_KEEP_COUNT
      value: {{ $b.keepCount | quote }}
    - name: BACKUP_KEEP_DAYS
      value: {{ $b.keepDays | quote }}
    - name: BACKUP_FALLBACK_TO_MASTER
      value: {{ ternary "yes" "no" $b.fallbackToMaster | quote }}
    - name: BACKUP_MAX_LAG_SECONDS
      value: {{ $b.maxReplicaLagSeconds | quote }}
    - name: BACKUP_TRANSFER_TIMEOUT
      value: {{ $b.activeDeadlineSeconds | quote }}
    {{- if include "tally.redis.tls" $ }}
    # TLS as tally's pods (files/tls-lib.sh reads this directory): the CA bundle, and a client
    # certificate only when the servers ask for one (redis.tls.authClients yes).
    - name: REDIS_TLS
      value: "yes"
    - name: REDIS_TLS_DIR
      value: /etc/tally/redis-tls
    {{- end }}
  resources:
    {{- toYaml $b.resources | nindent 4 }}
  securityContext:
    {{- toYaml $.Values.redis.securityContext | nindent 4 }}
  volumeMounts:
    - name: scripts
      mountPath: {{ .scripts }}
      readOnly: true
    - name: auth
      mountPath: /etc/redis-auth
      readOnly: true
    - name: backup
      mountPath: /backup
    - name: tmp
      mountPath: /tmp
    {{- if include "tally.redis.tls" $ }}
    {{- include "tally.redisClient.tlsVolumeMount" $ | nindent 4 }}
    {{- end }}
{{- end -}}
