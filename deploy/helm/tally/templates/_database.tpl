{{/*
The database of the jobs tier: the chart's Postgres (postgresql.*) or externalDatabase. Names,
the password Secret and TALLY_DATABASE_URL.
*/}}

{{/*
The chart's Postgres: <= 51 characters, so the StatefulSet's controller-revision-hash label and
"-auth" stay valid.
*/}}
{{- define "tally.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "tally.fullname" . | trunc 40 | trimSuffix "-") -}}
{{- end -}}

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
