{{/*
The chart's password Secrets (the Redis users', the chart's Postgres) are not rendered: the hook
Job in secrets-job.yaml (files/secrets/ensure-secrets.sh) creates them on first install and adds
missing keys on upgrades, so every render of the chart is the same (GitOps) and no password is in
a manifest or in Helm's release record.
*/}}

{{/* "Secret=KEY,KEY" for each Secret the hook Job keeps, space separated; empty: none. */}}
{{- define "tally.secretsJob.specs" -}}
{{- $specs := list -}}
{{- if and (include "tally.redis.internal" .) (not .Values.redis.auth.existingSecret) -}}
{{- $specs = append $specs (printf "%s=%s" (include "tally.redis.secretName" .) (include "tally.redis.secretKeys" .)) -}}
{{- end -}}
{{- if and .Values.jobs.enabled .Values.postgresql.enabled (not .Values.postgresql.auth.existingSecret) -}}
{{- $specs = append $specs (printf "%s=%s" (include "tally.database.secretName" .) .Values.postgresql.auth.existingSecretPasswordKey) -}}
{{- end -}}
{{- join " " $specs -}}
{{- end -}}
