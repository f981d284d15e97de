{{/*
Names, labels, images and ServiceAccounts of the chart, the app/web routing decisions and pod
scheduling. Redis, the database, generated passwords and the value checks have their own _*.tpl.
*/}}

{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "tally.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: the release name, plus the chart name when it differs.
At most 52 characters, so that suffixed names ("-test-check") stay valid DNS labels (<= 63).
*/}}
{{- define "tally.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tally.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels -------------------------------------------------------------------------------- */}}

{{/* Labels of every resource, without name / instance / component (pods add their selector labels). */}}
{{- define "tally.commonLabels" -}}
helm.sh/chart: {{ include "tally.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tally
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of a resource that is not a pod: name, instance and the common labels. */}}
{{- define "tally.labels" -}}
app.kubernetes.io/name: {{ include "tally.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "tally.commonLabels" . }}
{{- end -}}

{{/*
The labels that select one component's pods. Args: ctx (the root context), component ("app",
"web", "worker", "redis", "postgresql" or "test").
*/}}
{{- define "tally.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tally.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images: repository@digest when a digest is given, else repository:tag. */}}
{{- define "tally.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString (default .default .image.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "tally.image" -}}
{{- include "tally.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* The web tier: <fullname>-web (<= 56 characters; "-web-admin" <= 62). */}}
{{- define "tally.web.fullname" -}}
{{- printf "%s-web" (include "tally.fullname" .) -}}
{{- end -}}

{{/* The jobs tier's worker: <fullname>-worker (<= 57 characters; "-worker-admin" <= 63). */}}
{{- define "tally.worker.fullname" -}}
{{- printf "%s-worker" (include "tally.fullname" . | trunc 50 | trimSuffix "-") -}}
{{- end -}}

{{/*
The ServiceAccount of a tier: its serviceAccount.name, else the tier's fullname when the chart
creates it. Args: ctx (the root context), component ("app", "web" or "worker").
*/}}
{{- define "tally.serviceAccountName" -}}
{{- $path := get (dict "app" "serviceAccount" "web" "web.serviceAccount" "worker" "jobs.worker.serviceAccount") .component -}}
{{- /* $sa: the values at $path, e.g. .Values.jobs.worker.serviceAccount */ -}}
{{- $sa := .ctx.Values -}}
{{- range splitList "." $path -}}{{- $sa = index $sa . -}}{{- end -}}
{{- if $sa.create -}}
{{- default (include (ternary "tally.fullname" (printf "tally.%s.fullname" .component) (eq .component "app")) .ctx) $sa.name -}}
{{- else -}}
{{- required (printf "%s.name is required when %s.create is false" $path $path) $sa.name -}}
{{- end -}}
{{- end -}}

{{/* The app Service's type: service.type, else LoadBalancer, or ClusterIP behind web. */}}
{{- define "tally.serviceType" -}}
{{- if .Values.service.type -}}
{{- .Values.service.type -}}
{{- else if .Values.web.enabled -}}
ClusterIP
{{- else -}}
LoadBalancer
{{- end -}}
{{- end -}}

{{/* The app Service's in-cluster URL. */}}
{{- define "tally.apiUrl" -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "tally.fullname" .) .Release.Namespace .Values.clusterDomain .Values.service.port -}}
{{- end -}}

{{/* True ("true") when the Ingress or HTTPRoute sends web.apiPathPrefix straight to the app. */}}
{{- define "tally.web.directApi" -}}
{{- if and .Values.web.enabled .Values.web.apiPathPrefix (or .Values.ingress.enabled .Values.httpRoute.enabled) -}}
true
{{- end -}}
{{- end -}}

{{/*
True ("true") when the app's port admits only web (and networkPolicy.ingressControllerFrom): web is
on and the app's Service is ClusterIP. A user who makes the app's Service public with web on keeps
its port open to all.
*/}}
{{- define "tally.web.apiPrivate" -}}
{{- if and .Values.web.enabled (eq (include "tally.serviceType" .) "ClusterIP") -}}
true
{{- end -}}
{{- end -}}

{{/* Scheduling ---------------------------------------------------------------------------- */}}

{{/* affinity: the user's, else pod anti-affinity by hostname (soft or hard). Args: ctx, mode, labels. */}}
{{- define "tally.affinity" -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- .labels | nindent 10 }}
{{- else if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .labels | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* topologySpreadConstraints: the user's, else over nodes and zones, best effort. */}}
{{- define "tally.topologySpread" -}}
{{- if .constraints -}}
{{ toYaml .constraints }}
{{- else -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- .labels | nindent 6 }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- .labels | nindent 6 }}
{{- end -}}
{{- end -}}

{{/*
OTLP trace export of the app, web and worker containers (tracing.otlpEndpoint), with the pod and
namespace as resource attributes so a trace UI can tell the pods apart. Nothing when off.
*/}}
{{- define "tally.tracingEnv" -}}
{{- with .Values.tracing.otlpEndpoint }}
- name: TALLY_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: k8s.pod.name=$(OTEL_K8S_POD_NAME),k8s.namespace.name=$(OTEL_K8S_NAMESPACE)
{{- end }}
{{- end -}}
