{{/*
Checks of the values that values.schema.json cannot express. deployment.yaml runs tally.validate
and the app's own tally.checkGrace, so a bad combination fails `helm template` / `helm install`.
*/}}

{{- define "tally.validate" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- $mode := include "tally.redis.mode" . -}}
{{- if and (eq $mode "sentinel") (gt (int .Values.redis.sentinel.quorum) (int .Values.redis.replicas)) -}}
{{- fail "redis.sentinel.quorum must not exceed redis.replicas" -}}
{{- end -}}
{{- if and (eq $mode "external") (not .Values.externalRedis.url) (not .Values.externalRedis.sentinels) (not .Values.externalRedis.cluster.nodes) -}}
{{- fail "redis.mode is external (or redis.enabled is false): set externalRedis.url, externalRedis.sentinels or externalRedis.cluster.nodes" -}}
{{- end -}}
{{- if and (include "tally.redis.internal" .) (not (regexMatch "^[A-Za-z0-9:._/@=+-]*$" (printf "%s%s" .Values.keyPrefix .Values.keyNamespace))) -}}
{{- fail "keyPrefix and keyNamespace may hold only letters, digits and :._/@=+- with the chart's Redis: they become key patterns of ACL user tally (files/auth-lib.sh)" -}}
{{- end -}}
{{- if include "tally.redis.usesCluster" . -}}
{{- if contains "{" .Values.keyPrefix -}}
{{- fail "keyPrefix must not contain braces with Redis Cluster: the counter keys carry the id as their hash tag" -}}
{{- end -}}
{{- if and .Values.jobs.enabled .Values.jobs.keda.enabled -}}
{{- fail "jobs.keda.enabled is not supported with Redis Cluster yet (the chart's KEDA trigger is for Sentinel or a single Redis): scale the workers with jobs.replicaCount" -}}
{{- end -}}
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
{{- include "tally.checkGrace" (dict "prefix" "web." "delay" .Values.web.shutdownDelay "timeout" .Values.web.shutdownTimeout "grace" .Values.web.terminationGracePeriodSeconds "tracing" .Values.tracing.otlpEndpoint) -}}
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

{{/* The grace period must exceed the shutdown delay + drain (+ the last trace export). Args: prefix, delay, timeout, grace, tracing. */}}
{{- define "tally.checkGrace" -}}
{{- $need := addf (include "tally.seconds" .delay | float64) (include "tally.seconds" .timeout | float64) -}}
{{- $plus := "" -}}
{{- if .tracing -}}
{{- /* the last flush of the trace export waits up to 5 s (crates/tally/src/trace/export.rs) */ -}}
{{- $need = addf $need 5 -}}
{{- $plus = " + 5 s for the last trace export" -}}
{{- end -}}
{{- if le (float64 .grace) $need -}}
{{- fail (printf "%sterminationGracePeriodSeconds (%v) must exceed %sshutdownDelay + %sshutdownTimeout%s (%v s)" .prefix .grace .prefix .prefix $plus $need) -}}
{{- end -}}
{{- end -}}
