{{/*
Listener limits and the rate limit of tally's containers (docs/security.md), and the memory
arithmetic behind the default connection cap.
*/}}

{{/* Bytes of a Kubernetes memory quantity (256Mi, 1Gi, 500M, 1073741824); 0 when empty. */}}
{{- define "tally.memoryBytes" -}}
{{- $q := toString (default "" .) -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $number $q -}}
{{- if not $number -}}
0
{{- else if not (hasKey $units $unit) -}}
{{- fail (printf "cannot read the memory quantity %q (use Ki, Mi, Gi, k, M or G)" $q) -}}
{{- else -}}
{{- mulf (float64 $number) (get $units $unit) | int64 -}}
{{- end -}}
{{- end -}}

{{/*
TALLY_MAX_CONNECTIONS of a container: .value when set, else half its memory limit at 32 KiB a
connection (a held connection measured 15-16 kB, docs/security.md): 4096 at 256Mi. Without a
memory limit: tally's own default, 4096.
*/}}
{{- define "tally.maxConnections" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $bytes := include "tally.memoryBytes" (dig "limits" "memory" "" .resources) | int64 -}}
{{- if gt $bytes 0 -}}
{{- max 64 (div $bytes 65536) -}}
{{- else -}}
4096
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The limits' environment of a tally container. Arguments (dict): root (the chart's top context),
resources (the container's), maxConnections (null: derived), rateLimit (an object with perSecond,
burst, trustedProxies; null for the worker, which has no public port).
*/}}
{{- define "tally.listenerEnv" -}}
{{- $l := .root.Values.listeners -}}
- name: TALLY_HEADER_TIMEOUT
  value: {{ $l.headerTimeout | quote }}
- name: TALLY_IDLE_TIMEOUT
  value: {{ $l.idleTimeout | quote }}
- name: TALLY_ADMIN_MAX_CONNECTIONS
  value: {{ $l.adminMaxConnections | quote }}
{{- if .rateLimit }}
- name: TALLY_MAX_CONNECTIONS
  value: {{ include "tally.maxConnections" (dict "value" .maxConnections "resources" .resources) | quote }}
{{- with .rateLimit }}
{{- if .perSecond }}
- name: TALLY_RATE_LIMIT
  value: {{ .perSecond | quote }}
{{- with .burst }}
- name: TALLY_RATE_LIMIT_BURST
  value: {{ . | quote }}
{{- end }}
{{- with .trustedProxies }}
- name: TALLY_TRUSTED_PROXIES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
