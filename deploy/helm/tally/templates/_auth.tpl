{{/*
Generated passwords and credential checksums, shared by the chart's Redis and Postgres. Args of
both helpers: ctx (the root context) and store, the values key of the chart's own store: "redis"
(external counterpart externalRedis) or "postgresql" (externalDatabase). The store's values hold
enabled and auth.existingSecret / auth.existingSecretPasswordKey; the chart-made Secret is
tally.<store>.fullname + "-auth".
*/}}

{{/*
The base64 password of a chart-made Secret: the one already in the cluster on upgrades (`lookup`),
else a new random one. Computed once per render and cached in the store's auth values, so the
Secret and the checksum annotations agree.
*/}}
{{- define "tally.passwordB64" -}}
{{- $auth := (index .ctx.Values .store).auth -}}
{{- if not (hasKey $auth "__password") -}}
{{- $key := $auth.existingSecretPasswordKey -}}
{{- $name := default (printf "%s-auth" (include (printf "tally.%s.fullname" .store) .ctx)) $auth.existingSecret -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace $name -}}
{{- $pw := "" -}}
{{- if and $existing (hasKey $existing "data") (hasKey (default dict $existing.data) $key) -}}
{{- $pw = index $existing.data $key -}}
{{- else -}}
{{- $pw = randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- $_ := set $auth "__password" $pw -}}
{{- end -}}
{{- get $auth "__password" -}}
{{- end -}}

{{/*
A checksum of a store's credentials, in pod annotations so that a changed password rolls the pods
on `helm upgrade`. For an existing Secret (the store's or its external counterpart's) it is
computed from the Secret's resourceVersion in the cluster (constant under `helm template`).
*/}}
{{- define "tally.authChecksum" -}}
{{- $own := index .ctx.Values .store -}}
{{- $enabled := $own.enabled -}}
{{- if eq .store "redis" -}}{{- $enabled = include "tally.redis.internal" .ctx | eq "true" -}}{{- end -}}
{{- if and $enabled (not $own.auth.existingSecret) -}}
{{- include "tally.passwordB64" . | sha256sum -}}
{{- else -}}
{{- $external := index .ctx.Values (get (dict "redis" "externalRedis" "postgresql" "externalDatabase") .store) -}}
{{- $name := ternary $own.auth.existingSecret $external.existingSecret $enabled -}}
{{- if $name -}}
{{- $s := lookup "v1" "Secret" .ctx.Release.Namespace $name -}}
{{- /* the Secret's resourceVersion changes with its data; no hash of a (maybe weak) password */ -}}
{{- printf "%s/%v" $name (dig "metadata" "resourceVersion" "" (default dict $s)) | sha256sum -}}
{{- else -}}
{{- "none" | sha256sum -}}
{{- end -}}
{{- end -}}
{{- end -}}
