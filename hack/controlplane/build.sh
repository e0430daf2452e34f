#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into OUTDIR/bin (a cache dir outside the
# repo, normally ~/.cache/agent-registry/controlplane/<k8s-version>/). The build runs in a copy of
# this folder's go.mod under OUTDIR/src, so nothing in the repository is written.
# Usage: build.sh OUTDIR            (agentreg dev cluster up calls it; it can also be run by hand)
# A cold build downloads the modules and compiles ~2,500 packages: about 15 minutes (16 measured) on
# 2 cores. A rerun with the Go build cache warm takes well under a minute.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
out="${1:?usage: build.sh OUTDIR}"
mkdir -p "$out/src" "$out/bin"

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed: kube-apiserver and etcd are built with 'go build' from the" >&2
  echo "Go module proxy. Install Go >= $(sed -n 's/^go //p' "$here/go.mod"), or point KUBECONFIG at an existing cluster." >&2
  exit 127
fi

start=$(date +%s)
log() { printf '[controlplane build %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

# Heartbeat: a cold build prints little for minutes; say that it is still going.
( while sleep 30; do log "... still building (a cold build takes about 15 minutes on 2 cores)"; done ) &
heartbeat=$!
trap 'kill $heartbeat 2>/dev/null || true' EXIT

cp "$here/go.mod" "$out/src/go.mod"
[ -f "$here/go.sum" ] && cp "$here/go.sum" "$out/src/go.sum"
cd "$out/src"
# The module proxy checks each module against the checksum database; -mod=mod lets go build
# complete go.sum in the cache copy (the repo's go.sum pins what was verified when it was written).
export GOFLAGS="-mod=mod ${GOFLAGS:-}"
export CGO_ENABLED=0

log "downloading modules for k8s.io/kubernetes@${KUBERNETES_VERSION} and etcd ${ETCD_VERSION} ($(go version))"
go mod download k8s.io/kubernetes go.etcd.io/etcd/server/v3

# The same ldflags Kubernetes' own hack/lib/version.sh sets, so `kube-apiserver --version` and the
# /version endpoint report the real release instead of v0.0.0-master.
commit="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | sed -n 's/.*"Hash": "\([0-9a-f]*\)".*/\1/p' | head -1)"
minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitCommit=${commit} -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X ${pkg}.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

log "downloading modules and building kube-apiserver ${KUBERNETES_VERSION} (the long step)"
go build -trimpath -ldflags "$ldflags" -o "$out/bin/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out/bin/kube-apiserver.tmp" "$out/bin/kube-apiserver"

log "building etcd ${ETCD_VERSION}"
go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd.tmp" go.etcd.io/etcd/server/v3
mv "$out/bin/etcd.tmp" "$out/bin/etcd"

"$out/bin/kube-apiserver" --version
"$out/bin/etcd" --version | head -1
log "done in $(( $(date +%s) - start ))s"
echo "$(( $(date +%s) - start ))" > "$out/build-seconds"
