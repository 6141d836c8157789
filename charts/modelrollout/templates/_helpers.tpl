{{- define "modelrollout.labels" -}}
app.kubernetes.io/name: modelrollout
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Every Pod meets the "restricted" Pod Security Standard: a non-root user, the default seccomp profile, */}}
{{- define "modelrollout.podSecurity" -}}
runAsNonRoot: true
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* no privilege escalation, no capabilities, a read-only root filesystem (writes go to an emptyDir). */}}
{{- define "modelrollout.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}
