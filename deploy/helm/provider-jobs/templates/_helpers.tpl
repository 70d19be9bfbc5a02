{{- define "provider-jobs.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "provider-jobs.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "provider-jobs.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "provider-jobs.secretName" -}}
{{ include "provider-jobs.fullname" . }}
{{- end -}}

{{/* Settings every container reads: broker, queue, archive, logging. */}}
{{- define "provider-jobs.env" -}}
- name: PROVIDER_JOBS_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.broker.existingSecret | default (include "provider-jobs.secretName" .) }}
      key: brokerUrl
- name: PROVIDER_JOBS_ARCHIVE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.archive.existingSecret | default (include "provider-jobs.secretName" .) }}
      key: archiveUrl
- name: PROVIDER_JOBS_QUEUE_NAME
  value: {{ .Values.queueName | quote }}
- name: PROVIDER_JOBS_QUEUE_TYPE
  value: {{ .Values.broker.queueType | quote }}
- name: PROVIDER_JOBS_LOG_FORMAT
  value: json
- name: PROVIDER_JOBS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: PROMETHEUS_MULTIPROC_DIR
  value: /tmp/provider-jobs-metrics
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Writable scratch for a read-only root filesystem: /tmp and the
     prometheus multiprocess directory, empty at each pod start. */}}
{{- define "provider-jobs.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: metrics
  emptyDir: {}
{{- end -}}

{{- define "provider-jobs.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: metrics
  mountPath: /tmp/provider-jobs-metrics
{{- end -}}
