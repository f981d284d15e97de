{{/*
Peers and rules shared by the NetworkPolicies (networkpolicy.yaml, networkpolicy-egress.yaml).
*/}}

{{/*
Who may reach the admin ports (health, metrics) and the exporter: this release's own pods, the
pods of networkPolicy.metricsNamespace, and networkPolicy.metricsFrom. The kubelet's probes come
from the node, which NetworkPolicies never block.
*/}}
{{- define "tally.metricsFrom" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "tally.name" . }}
      app.kubernetes.io/instance: {{ .Release.Name }}
{{- with .Values.networkPolicy.metricsNamespace }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . | quote }}
{{- end }}
{{- with .Values.networkPolicy.metricsFrom }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Egress: DNS, to any resolver (node-local caches and kube-dns alike). */}}
{{- define "tally.egress.dns" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{/*
Egress to Redis: the chart's Redis pods (Redis and Sentinel ports), or the ports of
externalRedis (url or sentinels) at any address.
*/}}
{{- define "tally.egress.redis" -}}
{{- if include "tally.redis.internal" . }}
- to:
    - podSelector:
        matchLabels:
          {{- include "tally.selectorLabels" (dict "ctx" . "component" "redis") | nindent 10 }}
  ports:
    - port: redis
      protocol: TCP
    {{- if eq (include "tally.redis.mode" .) "sentinel" }}
    - port: sentinel
      protocol: TCP
    {{- end }}
{{- else }}
{{- $ports := list }}
{{- with .Values.externalRedis.url }}
{{- $port := regexFind ":[0-9]+" (regexReplaceAll "^[a-z]+://([^@/]*@)?" . "") | trimPrefix ":" }}
{{- $ports = append $ports (default "6379" $port) }}
{{- end }}
{{- range .Values.externalRedis.cluster.nodes }}
{{- $ports = append $ports (default "6379" (regexFind "[0-9]+$" (toString .))) }}
{{- end }}
{{- range .Values.externalRedis.sentinels }}
{{- $ports = append $ports (default "26379" (regexFind "[0-9]+$" (toString .))) }}
{{- end }}
- ports:
    {{- range uniq $ports }}
    - port: {{ int . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end -}}

{{/* Egress to Postgres (the API only): the chart's Postgres pod, or externalDatabase's port. */}}
{{- define "tally.egress.postgresql" -}}
{{- if .Values.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "tally.selectorLabels" (dict "ctx" . "component" "postgresql") | nindent 10 }}
  ports:
    - port: postgresql
      protocol: TCP
{{- else }}
- ports:
    - port: {{ int .Values.externalDatabase.port }}
      protocol: TCP
{{- end }}
{{- end -}}

{{/* Egress of web to the API: this release's app pods, or web.apiUrl's port at any address. */}}
{{- define "tally.egress.api" -}}
{{- with .Values.web.apiUrl }}
{{- $rest := regexReplaceAll "^[a-z]+://([^@/]*@)?" . "" }}
{{- $port := regexFind ":[0-9]+" $rest | trimPrefix ":" }}
- ports:
    - port: {{ int (default (ternary "443" "80" (hasPrefix "https" .)) $port) }}
      protocol: TCP
{{- else }}
- to:
    - podSelector:
        matchLabels:
          {{- include "tally.selectorLabels" (dict "ctx" . "component" "app") | nindent 10 }}
  ports:
    - port: http
      protocol: TCP
{{- end }}
{{- end -}}
