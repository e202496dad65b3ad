#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, as envtest runs it: etcd + kube-apiserver +
# kube-controller-manager, built from the Go module proxy (no binary downloads exist here).
# usage: kube.sh up|down|env|status|start|stop|restart
#        kube.sh build      build the binaries into the cache only (stdout empty; for test.sh to
#                           start the ~10 min cold build early, in the background)
#        kube.sh bin NAME   print the path of a built binary (kube-apiserver, etcd, …)
#   stop/start keep etcd's data, the certificates and the ports.
# Printed env: KUBECONFIG (admin, system:masters), KUBE_API_URL, KUBE_CA_FILE,
#              KUBE_SA_ISSUER (service-account token issuer), KUBE_AUDIT_LOG (JSON lines: every
#              request made with a ServiceAccount's token, at Metadata level: who did which verb
#              on which resource, so tests can prove an RBAC role holds no rule nobody uses).
set -euo pipefail
WS_NAME=kube
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(KUBECONFIG KUBE_API_URL KUBE_CA_FILE KUBE_SA_ISSUER KUBE_AUDIT_LOG)
WS_TIMEOUT=120

KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.4}
BIN_DIR=$WS_CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/bin
SRC_DIR=$WS_CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/src
# Go's module and build caches live in the service cache too, so one `rm -rf` of the cache
# (after `chmod -R u+w`: Go writes modules read-only) reclaims all of it (~3 GB).
export GOMODCACHE=${WEIR_KUBE_GOMODCACHE:-$WS_CACHE/go/mod}
export GOCACHE=${WEIR_KUBE_GOCACHE:-$WS_CACHE/go/build}
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
SA_ISSUER=https://kubernetes.default.svc.cluster.local
SERVICE_CIDR=10.0.0.0/24

PKI=$WS_DIR/pki
ADMIN_KUBECONFIG=$WS_DIR/admin.kubeconfig
KCM_KUBECONFIG=$WS_DIR/controller-manager.kubeconfig

# ---- build -------------------------------------------------------------------------------

# go.mod of a wrapper module around k8s.io/kubernetes: kubernetes' own go.mod replaces its
# staging modules with ./staging/…, which only works inside its repository, so the wrapper
# replaces each of them with the published k8s.io/<m> v0.<minor>.<patch> instead.
kube_wrapper_gomod() {
  local kmod staging
  kmod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -s "$kmod" ] || ws_die "go mod download k8s.io/kubernetes@$KUBE_VERSION gave no go.mod"
  staging=v0.${KUBE_VERSION#v1.}
  echo "module weir.dev/kube-build"
  echo
  grep -E '^(go|godebug) ' "$kmod"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$kmod" |
    while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
  echo ")"
}

build_kube() {
  local dir=$SRC_DIR/kubernetes minor=${KUBE_VERSION#v1.} now ldflags="" pkg
  minor=${minor%%.*}
  mkdir -p "$dir"
  kube_wrapper_gomod >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

// Package tools pins the commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  # Without these the servers report v0.0.0-master (and clients warn about version skew).
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$now"
  done
  ws_log "kube: go mod tidy for k8s.io/kubernetes $KUBE_VERSION (downloads modules)"
  (cd "$dir" && go mod tidy) >&2 || ws_die "go mod tidy failed in $dir"
  ws_log "kube: building kube-apiserver and kube-controller-manager (cold: ~10 min on 2 cores)"
  (cd "$dir" && go build -trimpath -ldflags "-s -w$ldflags" -o "$BIN_DIR.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager) >&2 ||
    ws_die "go build of kube-apiserver/kube-controller-manager failed"
}

build_etcd() {
  local dir=$SRC_DIR/etcd
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<MOD
module weir.dev/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$dir/tools.go" <<'GO'
//go:build tools

// Package tools pins the command this module builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  ws_log "kube: building etcd $ETCD_VERSION"
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR.tmp/etcd" go.etcd.io/etcd/server/v3) >&2 ||
    ws_die "go build of etcd failed"
}

have_bins() {
  [ -x "$BIN_DIR/kube-apiserver" ] && [ -x "$BIN_DIR/kube-controller-manager" ] && [ -x "$BIN_DIR/etcd" ]
}

svc_install() {
  ws_have openssl || ws_apt_install openssl
  ws_have curl || ws_apt_install curl
  have_bins && return 0
  ws_have go || ws_die "go not found on PATH (Go 1.24+ builds the control plane from the module proxy)"
  mkdir -p "$(dirname "$BIN_DIR")"
  # One build per machine: the lock is in the cache, shared by every run dir.
  exec 7>"$(dirname "$BIN_DIR")/.build.lock"
  flock 7
  if ! have_bins; then
    local t0=$SECONDS
    rm -rf "$BIN_DIR.tmp" && mkdir -p "$BIN_DIR.tmp"
    build_etcd
    build_kube
    rm -rf "$BIN_DIR" && mv "$BIN_DIR.tmp" "$BIN_DIR"
    ws_log "kube: built in $((SECONDS - t0))s into $BIN_DIR"
  fi
  exec 7>&-
}

# ---- instance ----------------------------------------------------------------------------

# A free port below the ephemeral range, so that no outgoing connection can take it between
# stop and start (ws_free_port lets the kernel pick one inside that range).
free_low_port() {
  ws_python - "$@" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
taken = {int(p) for p in sys.argv[1:]}
for _ in range(1000):
    p = random.randrange(20000, low)
    if p in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    sys.exit("no free port below the ephemeral range")
PY
}

# Own CA; serving cert for 127.0.0.1 and the in-cluster names; service-account RSA key pair.
make_pki() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=weir-e2e-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    cat >apiserver.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >>"$WS_LOG" 2>&1 || ws_die "openssl failed (see $WS_LOG)"
}

# kubeconfig FILE USER TOKEN
write_kubeconfig() {
  local ca
  ca=$(base64 -w0 <"$PKI/ca.crt")
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: weir-e2e
  cluster:
    server: $KUBE_API_URL
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: weir-e2e
  context: {cluster: weir-e2e, user: $2, namespace: default}
current-context: weir-e2e
KC
  chmod 600 "$1"
}

random_token() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'; }

svc_init() {
  local api etcd_client etcd_peer kcm admin_token kcm_token
  api=$(free_low_port)
  etcd_client=$(free_low_port "$api")
  etcd_peer=$(free_low_port "$api" "$etcd_client")
  kcm=$(free_low_port "$api" "$etcd_client" "$etcd_peer")
  make_pki
  admin_token=$(random_token)
  kcm_token=$(random_token)
  # Static tokens: the admin (system:masters) and the controller-manager's own user, which the
  # bootstrap RBAC policy knows; with --use-service-account-credentials each controller then
  # acts as its own ServiceAccount, as in a cluster.
  printf '%s,admin,admin-uid,system:masters\n%s,system:kube-controller-manager,kcm-uid\n' \
    "$admin_token" "$kcm_token" >"$PKI/tokens.csv"
  chmod 600 "$PKI/tokens.csv"
  KUBE_API_URL=https://127.0.0.1:$api
  write_kubeconfig "$ADMIN_KUBECONFIG" admin "$admin_token"
  write_kubeconfig "$KCM_KUBECONFIG" system:kube-controller-manager "$kcm_token"
  cat >"$WS_DIR/ports" <<PORTS
API_PORT=$api
ETCD_CLIENT_PORT=$etcd_client
ETCD_PEER_PORT=$etcd_peer
KCM_PORT=$kcm
PORTS
  mkdir -p "$WS_DIR/etcd"
  # ServiceAccounts' requests only (not the controllers', which run as their own ServiceAccounts
  # in kube-system): the tests read what an operator's token was used for.
  cat >"$WS_DIR/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
POLICY
  ws_write_env "KUBECONFIG=$ADMIN_KUBECONFIG" "KUBE_API_URL=$KUBE_API_URL" \
    "KUBE_CA_FILE=$PKI/ca.crt" "KUBE_SA_ISSUER=$SA_ISSUER" "KUBE_AUDIT_LOG=$WS_DIR/audit.log"
}

# One supervisor process (the pid lib.sh tracks) runs the three servers in its process group
# and ends the whole group as soon as one of them exits, so a half-dead control plane never
# looks alive. Each server logs to its own file; the supervisor's lines go to $WS_LOG.
svc_launch() {
  # shellcheck disable=SC1091
  . "$WS_DIR/ports"
  local d=$WS_DIR b=$BIN_DIR admin_token
  admin_token=$(sed -n 's/^ *token: //p' "$ADMIN_KUBECONFIG")
  cat >"$d/supervise.sh" <<SUP
#!/usr/bin/env bash
set -u
pids=()
stop_all() { kill -TERM "\${pids[@]}" 2>/dev/null; wait; }
trap 'stop_all; exit 0' TERM INT
"$b/etcd" --name weir-e2e --data-dir "$d/etcd" --unsafe-no-fsync \\
  --listen-client-urls http://127.0.0.1:$ETCD_CLIENT_PORT --advertise-client-urls http://127.0.0.1:$ETCD_CLIENT_PORT \\
  --listen-peer-urls http://127.0.0.1:$ETCD_PEER_PORT --initial-advertise-peer-urls http://127.0.0.1:$ETCD_PEER_PORT \\
  --initial-cluster weir-e2e=http://127.0.0.1:$ETCD_PEER_PORT --log-level warn >>"$d/etcd.log" 2>&1 &
pids+=(\$!)
"$b/kube-apiserver" --etcd-servers http://127.0.0.1:$ETCD_CLIENT_PORT \\
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port $API_PORT \\
  --cert-dir "$d/pki" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \\
  --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \\
  --service-account-issuer $SA_ISSUER --service-account-key-file "$PKI/sa.pub" \\
  --service-account-signing-key-file "$PKI/sa.key" --api-audiences $SA_ISSUER \\
  --service-cluster-ip-range $SERVICE_CIDR --authorization-mode Node,RBAC \\
  --endpoint-reconciler-type none --allow-privileged=true --profiling=false \\
  --audit-policy-file "$d/audit-policy.yaml" --audit-log-path "$d/audit.log" \\
  --audit-log-format json --audit-log-mode blocking \\
  >>"$d/apiserver.log" 2>&1 &
pids+=(\$!)
# The controller-manager starts once the API server is ready: before that its user's RBAC
# bootstrap roles may not exist yet, and it exits (a kubelet would restart it).
for _ in \$(seq 1 600); do
  [ "\$(curl -ksS --max-time 2 -H "Authorization: Bearer $admin_token" https://127.0.0.1:$API_PORT/readyz 2>/dev/null)" = ok ] && break
  kill -0 "\${pids[@]}" 2>/dev/null || break
  sleep 0.2
done
"$b/kube-controller-manager" --kubeconfig "$KCM_KUBECONFIG" \\
  --authentication-kubeconfig "$KCM_KUBECONFIG" --authorization-kubeconfig "$KCM_KUBECONFIG" \\
  --bind-address 127.0.0.1 --secure-port $KCM_PORT --cert-dir "$d/pki/kcm" \\
  --use-service-account-credentials=true --service-account-private-key-file "$PKI/sa.key" \\
  --root-ca-file "$PKI/ca.crt" --service-cluster-ip-range $SERVICE_CIDR \\
  --leader-elect=false --controllers '*' --profiling=false >>"$d/controller-manager.log" 2>&1 &
pids+=(\$!)
wait -n
echo "\$(date -u +%FT%TZ) a control-plane process exited; stopping the others"
for f in etcd apiserver controller-manager; do echo "--- \$f.log"; tail -n 15 "$d/\$f.log"; done
stop_all
exit 1
SUP
  chmod +x "$d/supervise.sh"
  ws_spawn "$d/supervise.sh"
}

# Ready = the API server answers /readyz, the controller-manager /healthz, and the
# controller-manager has done its first work (the `default` ServiceAccount and the
# kube-root-ca.crt ConfigMap exist), so Pods can be created as soon as `up` returns.
svc_ready() {
  # shellcheck disable=SC1091
  . "$WS_DIR/ports"
  local token
  token=$(sed -n 's/^ *token: //p' "$KUBECONFIG")
  api() { curl -fsS --max-time 3 --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $token" "$KUBE_API_URL$1"; }
  [ "$(api /readyz)" = ok ] || return 1
  [ "$(curl -ksS --max-time 3 "https://127.0.0.1:$KCM_PORT/healthz")" = ok ] || return 1
  api /api/v1/namespaces/default/serviceaccounts/default >/dev/null || return 1
  api /api/v1/namespaces/default/configmaps/kube-root-ca.crt >/dev/null
}

case "${1:-}" in
  build)
    ws_check_paths
    WS_LOG=/dev/stderr svc_install
    exit 0
    ;;
  bin)
    ws_check_paths
    [ -n "${2:-}" ] || { echo "usage: $(basename "$0") bin kube-apiserver|kube-controller-manager|etcd" >&2; exit 2; }
    WS_LOG=/dev/stderr svc_install
    [ -x "$BIN_DIR/$2" ] || ws_die "no binary $2 in $BIN_DIR"
    echo "$BIN_DIR/$2"
    exit 0
    ;;
esac
ws_main "$@"
