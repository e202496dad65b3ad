{{- define "weir-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "weir-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "weir-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "weir-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "weir-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A label map as the operator's flags take it: k=v,k=v (sorted). */}}
{{- define "weir-operator.labelList" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "weir-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "weir-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the controllers need in a watched namespace (or cluster-wide). */}}
{{- define "weir-operator.rules" -}}
{{- /*
Least privilege, proven by e2e/tests/it/operator/rbac.rs against the API server's audit log:
every rule below is used and nothing else is asked for. The operator writes with server-side
apply (a patch; one that creates the object is also checked against create), reads the metadata of
a job's StatefulSet, Service, PodDisruptionBudget and NetworkPolicy (`get`: a deleted one is put
back, and one whose content hash matches is not written again), and lets owner references
garbage-collect what a job owned.
*/ -}}
- apiGroups: ["weir.dev"]
  resources: ["streamjobs"]
  verbs: ["list", "watch", "patch"]        # patch: the deleteWithSavepoint finalizer
- apiGroups: ["weir.dev"]
  resources: ["connectors"]
  verbs: ["list", "watch"]
- apiGroups: ["weir.dev"]
  resources: ["streamjobs/status", "connectors/status"]
  verbs: ["patch"]
- apiGroups: ["weir.dev"]
  resources: ["streamjobs/finalizers"]
  # Owner references with blockOwnerDeletion on the job's objects need it where the
  # OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift, hardened clusters).
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]   # get: a deleted one is put back
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  # get: the values a Connector references (read when resolving) and each job's admin token;
  # list/watch: a rotation restarts the jobs that use it; create/patch: the job's admin token
  # Secret (<job>-admin-token), created when missing and rewritten on a rotation request.
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  # create/patch: each job's policy (server-side apply); delete: when a job switches it off.
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]                 # judge silent workers by their pods
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]               # patch: a repeated event's series count
{{- end -}}
