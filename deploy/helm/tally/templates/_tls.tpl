{{/*
TLS: the chart's Redis (redis.tls: the nodes' certificate Secret, the CA bundle, the clients'
certificate, the cert-manager Certificates' names), the clients of an external Redis
(externalRedis.tls) and of an external Postgres (externalDatabase.sslMode). docs/tls.md.
*/}}

{{/* "true" when the chart runs Redis and redis.tls.enabled, else empty. */}}
{{- define "tally.redis.tls" -}}
{{- if and (include "tally.redis.internal" .) .Values.redis.tls.enabled -}}true{{- end -}}
{{- end -}}

{{/* The Secret of the nodes' certificate: redis.tls.existingSecret, else the chart's Certificate's. */}}
{{- define "tally.redis.tlsSecret" -}}
{{- default (printf "%s-tls" (include "tally.redis.fullname" .)) .Values.redis.tls.existingSecret -}}
{{- end -}}
{{/* The Secret of the clients' certificate (authClients yes): redis.tls.clientSecret, else the chart's. */}}
{{- define "tally.redis.tlsClientSecret" -}}
{{- default (printf "%s-client-tls" (include "tally.redis.fullname" .)) .Values.redis.tls.clientSecret -}}
{{- end -}}

{{/*
Every name a node of the chart's Redis is reached by, for its certificate: each pod under the
headless Service (<pod>.<headless>.<namespace>.svc.<clusterDomain>, the name the scripts, the
sentinels and tally use, and its shorter forms), and in Sentinel mode the Sentinel Service.
*/}}
{{- define "tally.redis.tlsDnsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $cd := .Values.clusterDomain -}}
{{- $headless := include "tally.redis.headless" . -}}
{{- $count := int .Values.redis.replicas -}}
{{- if eq (include "tally.redis.mode" .) "cluster" -}}
{{- $count = int (include "tally.redis.clusterSize" .) -}}
{{- end -}}
{{- $hosts := list -}}
{{- range $i := until $count -}}
{{- $hosts = append $hosts (printf "%s-%d.%s" (include "tally.redis.fullname" $) $i $headless) -}}
{{- end -}}
{{- if eq (include "tally.redis.mode" .) "sentinel" -}}
{{- $hosts = append $hosts (include "tally.redis.sentinelService" .) -}}
{{- end -}}
{{- range $hosts }}
- {{ printf "%s.%s.svc.%s" . $ns $cd }}
- {{ printf "%s.%s.svc" . $ns }}
- {{ printf "%s.%s" . $ns }}
- {{ . }}
{{- end }}
{{- end -}}

{{/*
Environment of every container that runs the chart's Redis scripts with TLS (files/tls-lib.sh):
the redis, sentinel and Cluster containers and the Cluster init Job. Empty without TLS.
*/}}
{{- define "tally.redis.tlsEnv" -}}
{{- if include "tally.redis.tls" . -}}
- name: REDIS_TLS
  value: "yes"
- name: REDIS_TLS_DIR
  value: /etc/redis-tls
- name: REDIS_TLS_AUTH_CLIENTS
  value: {{ .Values.redis.tls.authClients | quote }}
- name: REDIS_TLS_RESTART_STAGGER
  value: {{ .Values.redis.tls.sentinelRestartStaggerSeconds | quote }}
{{- end -}}
{{- end -}}

{{/* The mount of the nodes' certificate files (REDIS_TLS_DIR). Args: ctx, name (the volume's). */}}
{{- define "tally.redis.tlsVolumeMount" -}}
{{- if include "tally.redis.tls" .ctx -}}
- name: {{ .name }}
  mountPath: /etc/redis-tls
  readOnly: true
{{- end -}}
{{- end -}}

{{/*
A volume of the nodes' TLS files: ca.crt (the CA bundle: redis.tls.caSecret's, else the
certificate Secret's) and, with key, the node's tls.crt and tls.key. A projected volume: the
kubelet updates its files together when a Secret changes (a renewal, a rotation), and the
containers reload them (files/tls-lib.sh). Args: ctx, name, key (bool).
*/}}
{{- define "tally.redis.tlsVolume" -}}
{{- $t := .ctx.Values.redis.tls -}}
{{- if include "tally.redis.tls" .ctx -}}
- name: {{ .name }}
  projected:
    defaultMode: 0440
    sources:
      {{- if or .key (not $t.caSecret) }}
      - secret:
          name: {{ include "tally.redis.tlsSecret" .ctx }}
          items:
            {{- if .key }}
            - key: tls.crt
              path: tls.crt
            - key: tls.key
              path: tls.key
            {{- end }}
            {{- if not $t.caSecret }}
            - key: ca.crt
              path: ca.crt
            {{- end }}
      {{- end }}
      {{- with $t.caSecret }}
      - secret:
          name: {{ . }}
          items:
            - key: {{ $t.caSecretKey }}
              path: ca.crt
      {{- end }}
{{- end -}}
{{- end -}}

{{/*
The Redis client TLS settings of tally's pods (the app and the worker), for the chart's Redis
or externalRedis: environment, volume mount and volume (/etc/tally/redis-tls: ca.crt, and
tls.crt / tls.key of a client certificate when the servers ask for one).
*/}}
{{- define "tally.redisClient.tlsMode" -}}
{{- /* "internal", "external" (a CA or client certificate to mount) or empty */ -}}
{{- if include "tally.redis.tls" . -}}internal
{{- else if and (not (include "tally.redis.internal" .)) (or .Values.externalRedis.tls.caSecret .Values.externalRedis.tls.clientSecret) -}}external
{{- end -}}
{{- end -}}
{{- define "tally.redisClient.tlsClientCert" -}}
{{- if include "tally.redis.tls" . -}}
{{- if eq .Values.redis.tls.authClients "yes" -}}{{ include "tally.redis.tlsClientSecret" . }}{{- end -}}
{{- else if not (include "tally.redis.internal" .) -}}
{{- .Values.externalRedis.tls.clientSecret -}}
{{- end -}}
{{- end -}}

{{- define "tally.redisClient.tlsEnv" -}}
{{- $mode := include "tally.redis.mode" . -}}
{{- if include "tally.redis.tls" . }}
- name: TALLY_REDIS_TLS
  value: "true"
{{- if eq $mode "sentinel" }}
- name: TALLY_SENTINEL_TLS
  value: "true"
{{- end }}
{{- else if eq $mode "external" }}
{{- if and .Values.externalRedis.tls.enabled (not .Values.externalRedis.url) }}
- name: TALLY_REDIS_TLS
  value: "true"
{{- end }}
{{- if .Values.externalRedis.tls.sentinels }}
- name: TALLY_SENTINEL_TLS
  value: "true"
{{- end }}
{{- end }}
{{- $files := include "tally.redisClient.tlsMode" . }}
{{- if or (eq $files "internal") (and (eq $files "external") .Values.externalRedis.tls.caSecret) }}
- name: TALLY_REDIS_TLS_CA_FILE
  value: /etc/tally/redis-tls/ca.crt
{{- end }}
{{- if include "tally.redisClient.tlsClientCert" . }}
- name: TALLY_REDIS_TLS_CERT_FILE
  value: /etc/tally/redis-tls/tls.crt
- name: TALLY_REDIS_TLS_KEY_FILE
  value: /etc/tally/redis-tls/tls.key
{{- end }}
{{- end -}}

{{- define "tally.redisClient.tlsVolumeMount" -}}
{{- if include "tally.redisClient.tlsMode" . -}}
- name: redis-tls
  mountPath: /etc/tally/redis-tls
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "tally.redisClient.tlsVolume" -}}
{{- $files := include "tally.redisClient.tlsMode" . -}}
{{- $client := include "tally.redisClient.tlsClientCert" . -}}
{{- $ca := dict -}}
{{- if eq $files "internal" -}}
{{- $t := .Values.redis.tls -}}
{{- $ca = dict "name" (default (include "tally.redis.tlsSecret" .) $t.caSecret) "key" (ternary $t.caSecretKey "ca.crt" (ne $t.caSecret "")) -}}
{{- else if .Values.externalRedis.tls.caSecret -}}
{{- $ca = dict "name" .Values.externalRedis.tls.caSecret "key" .Values.externalRedis.tls.caSecretKey -}}
{{- end -}}
{{- if $files -}}
{{- /* The CA bundle only, never the nodes' key; a client certificate of its own when asked. */ -}}
- name: redis-tls
  projected:
    defaultMode: 0440
    sources:
      {{- with $ca }}
      - secret:
          name: {{ .name }}
          items:
            - key: {{ .key }}
              path: ca.crt
      {{- end }}
      {{- with $client }}
      - secret:
          name: {{ . }}
          items:
            - key: tls.crt
              path: tls.crt
            - key: tls.key
              path: tls.key
      {{- end }}
{{- end -}}
{{- end -}}

{{/* TLS to an external Postgres: environment, volume mount and volume (docs/kubernetes.md). */}}
{{- define "tally.database.tlsEnv" -}}
{{- if not .Values.postgresql.enabled }}
{{- with .Values.externalDatabase.sslMode }}
- name: TALLY_DATABASE_SSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if .Values.externalDatabase.caSecret }}
- name: TALLY_DATABASE_SSLROOTCERT
  value: /etc/tally/database-tls/ca.crt
{{- end }}
{{- end }}
{{- end -}}
{{- define "tally.database.tlsVolumeMount" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.caSecret -}}
- name: database-tls
  mountPath: /etc/tally/database-tls
  readOnly: true
{{- end -}}
{{- end -}}
{{- define "tally.database.tlsVolume" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.caSecret -}}
- name: database-tls
  secret:
    secretName: {{ .Values.externalDatabase.caSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.externalDatabase.caSecretKey }}
        path: ca.crt
{{- end -}}
{{- end -}}

{{/* TLS combinations values.schema.json cannot express; rendered by redis-certificate.yaml. */}}
{{- define "tally.tls.validate" -}}
{{- $t := .Values.redis.tls -}}
{{- if include "tally.redis.tls" . -}}
{{- if and (not $t.existingSecret) (not $t.certManager.enabled) -}}
{{- fail "redis.tls.enabled needs a certificate: redis.tls.existingSecret (tls.crt, tls.key, ca.crt) or redis.tls.certManager.enabled" -}}
{{- end -}}
{{- if and $t.certManager.enabled (not $t.certManager.issuerRef.name) -}}
{{- fail "redis.tls.certManager.enabled needs redis.tls.certManager.issuerRef.name (an Issuer or ClusterIssuer)" -}}
{{- end -}}
{{- if and (eq $t.authClients "yes") (not $t.clientSecret) (not $t.certManager.enabled) -}}
{{- fail "redis.tls.authClients \"yes\": tally, the workers and KEDA need a client certificate: redis.tls.clientSecret (tls.crt, tls.key) or redis.tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}
{{- if not (include "tally.redis.internal" .) -}}
{{- $e := .Values.externalRedis -}}
{{- if and $e.tls.enabled $e.url -}}
{{- fail "externalRedis.tls.enabled is for sentinels or cluster.nodes: a url says TLS by its scheme, rediss://" -}}
{{- end -}}
{{- if and $e.tls.sentinels (not $e.sentinels) -}}
{{- fail "externalRedis.tls.sentinels needs externalRedis.sentinels" -}}
{{- end -}}
{{- $tlsOn := or $e.tls.enabled $e.tls.sentinels $e.cluster.tls (hasPrefix "rediss://" $e.url) -}}
{{- if and $e.sentinels (or $e.tls.caSecret $e.tls.clientSecret) (not (and $e.tls.enabled $e.tls.sentinels)) -}}
{{- fail "externalRedis.tls.caSecret / clientSecret with sentinels: tally uses them for the nodes and the sentinels alike, so set both externalRedis.tls.enabled and externalRedis.tls.sentinels" -}}
{{- end -}}
{{- if and (or $e.tls.caSecret $e.tls.clientSecret) (not $tlsOn) -}}
{{- fail "externalRedis.tls.caSecret / clientSecret without TLS: set externalRedis.tls.enabled (sentinels, cluster.nodes) or use a rediss:// url" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.jobs.enabled (not .Values.postgresql.enabled) .Values.externalDatabase.caSecret (not (has .Values.externalDatabase.sslMode (list "verify-ca" "verify-full"))) -}}
{{- fail "externalDatabase.caSecret is used by sslMode verify-ca or verify-full only: set externalDatabase.sslMode" -}}
{{- end -}}
{{- end -}}

{{/* The address the exporter scrapes: with TLS the pod's own name (its certificate names it;
$(POD_NAME) is the container's environment variable), else localhost. */}}
{{- define "tally.redis.exporterAddr" -}}
{{- if include "tally.redis.tls" . -}}
{{- printf "rediss://$(POD_NAME).%s:%d" (include "tally.redis.domain" .) (int .Values.redis.port) -}}
{{- else -}}
{{- printf "redis://localhost:%d" (int .Values.redis.port) -}}
{{- end -}}
{{- end -}}
