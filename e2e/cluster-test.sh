#!/usr/bin/env bash
# Cluster test (not run by CI): installs the operator chart into the cluster of the current
# kubeconfig, applies a StreamJob, waits for Ready, upgrades it (new restartNonce) and checks the
# new workers started from a savepoint. Says so and exits 0 when no cluster is reachable.
#
#   WEIR_OPERATOR_IMAGE=repo/weir-operator:tag WEIR_IMAGE=repo/weir:tag \
#   WEIR_STORAGE=s3://bucket/prefix e2e/cluster-test.sh
#
# The worker pods and the operator need write access to WEIR_STORAGE (checkpoints and
# savepoints must be shared); pass credentials with WEIR_STORAGE_ENV_SECRET (a Secret with AWS_*
# keys, mounted as env into both).
set -euo pipefail
cd "$(dirname "$0")/.."

NS=${WEIR_TEST_NAMESPACE:-weir-e2e}
RELEASE=weir-e2e
TIMEOUT=${WEIR_TEST_TIMEOUT:-300}
log() { printf 'cluster-test: %s\n' "$*" >&2; }

KUBECTL=${KUBECTL:-$(command -v kubectl || true)}
if [ -z "$KUBECTL" ]; then
  log "kubectl not found; no cluster test"
  exit 0
fi
if ! "$KUBECTL" version --request-timeout=5s >/dev/null 2>&1; then
  log "no Kubernetes cluster reachable from the current kubeconfig; skipping the cluster test"
  exit 0
fi
: "${WEIR_OPERATOR_IMAGE:?set WEIR_OPERATOR_IMAGE (repository:tag of the operator image)}"
: "${WEIR_IMAGE:?set WEIR_IMAGE (repository:tag of the weir worker image)}"
: "${WEIR_STORAGE:?set WEIR_STORAGE (s3://bucket/prefix shared by workers and operator)}"
HELM=$(e2e/services/helm.sh)

cleanup() {
  "$KUBECTL" -n "$NS" delete streamjob cluster-test --ignore-not-found --wait=false >/dev/null 2>&1 || true
  "$HELM" uninstall "$RELEASE" -n "$NS" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "installing the chart into namespace $NS"
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
env_values=()
if [ -n "${WEIR_STORAGE_ENV_SECRET:-}" ]; then
  env_values=(--set-json "env=[{\"name\":\"AWS_ACCESS_KEY_ID\",\"valueFrom\":{\"secretKeyRef\":{\"name\":\"$WEIR_STORAGE_ENV_SECRET\",\"key\":\"AWS_ACCESS_KEY_ID\"}}},{\"name\":\"AWS_SECRET_ACCESS_KEY\",\"valueFrom\":{\"secretKeyRef\":{\"name\":\"$WEIR_STORAGE_ENV_SECRET\",\"key\":\"AWS_SECRET_ACCESS_KEY\"}}}]")
fi
"$HELM" upgrade --install "$RELEASE" charts/weir-operator -n "$NS" --wait --timeout "${TIMEOUT}s" \
  --set image.repository="${WEIR_OPERATOR_IMAGE%:*}" --set image.tag="${WEIR_OPERATOR_IMAGE##*:}" \
  --set "watchNamespaces={$NS}" "${env_values[@]}"

apply_job() { # $1 = restartNonce
  cat <<YAML | "$KUBECTL" -n "$NS" apply -f - >/dev/null
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata:
  name: cluster-test
spec:
  image: $WEIR_IMAGE
  parallelism: 2
  upgradeMode: savepoint
  restartNonce: $1
  podTemplate:
    env:
$(if [ -n "${WEIR_STORAGE_ENV_SECRET:-}" ]; then printf '      - name: AWS_ACCESS_KEY_ID\n        valueFrom: { secretKeyRef: { name: %s, key: AWS_ACCESS_KEY_ID } }\n      - name: AWS_SECRET_ACCESS_KEY\n        valueFrom: { secretKeyRef: { name: %s, key: AWS_SECRET_ACCESS_KEY } }\n' "$WEIR_STORAGE_ENV_SECRET" "$WEIR_STORAGE_ENV_SECRET"; else echo '      []'; fi)
  pipeline:
    checkpoint: { interval: 2s, storage: $WEIR_STORAGE }
    sources:
      - name: gen
        type: datagen
        rate: 100
        fields: { id: { kind: sequence } }
    sinks:
      - { name: out, type: blackhole }
YAML
}

wait_ready() {
  log "waiting for Ready (up to ${TIMEOUT}s)"
  "$KUBECTL" -n "$NS" wait streamjob/cluster-test --for=condition=Ready --timeout="${TIMEOUT}s"
}

apply_job 1
wait_ready
log "upgrading (restartNonce 2): expect a stop-with-savepoint and a restart from it"
apply_job 2
deadline=$((SECONDS + TIMEOUT))
while :; do
  restored=$("$KUBECTL" -n "$NS" get streamjob cluster-test -o jsonpath='{.status.deployed.restoredFrom}')
  if [ -n "$restored" ]; then break; fi
  ((SECONDS < deadline)) || { "$KUBECTL" -n "$NS" describe streamjob cluster-test >&2; log "no savepoint used within ${TIMEOUT}s"; exit 1; }
  sleep 3
done
wait_ready
args=$("$KUBECTL" -n "$NS" get statefulset cluster-test -o jsonpath='{.spec.template.spec.containers[0].args}')
case "$args" in
  *--from-savepoint*"$restored"*) ;;
  *) log "StatefulSet does not start from $restored: $args"; exit 1 ;;
esac
log "upgrade used savepoint $restored; Ready again"
log "PASS"
