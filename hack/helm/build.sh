#!/usr/bin/env bash
# Build helm from the Go module proxy (no release-site downloads here) and cache it by version
# outside the repo. Prints the path of the binary on stdout; everything else goes to stderr.
#
#   hack/helm/build.sh            -> ~/.cache/agent-registry/helm/<version>/helm
#   HELM_VERSION=v3.21.4 hack/helm/build.sh
#
# Idempotent and safe to run concurrently: the build goes to a temp dir and is moved into place
# atomically, under a lock, so parallel test sessions never see a half-written binary.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${AGENTREG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-registry}"
DEST_DIR="$CACHE_ROOT/helm/$HELM_VERSION"
DEST="$DEST_DIR/helm"

if [[ -x "$DEST" ]]; then
    echo "$DEST"
    exit 0
fi

command -v go >/dev/null 2>&1 || {
    echo "hack/helm/build.sh: Go is missing; helm is built with 'go install' from the module proxy" >&2
    exit 1
}

mkdir -p "$DEST_DIR"
exec 9>"$DEST_DIR/.lock"
flock 9
if [[ -x "$DEST" ]]; then  # another process built it while we waited for the lock
    echo "$DEST"
    exit 0
fi

major="${HELM_VERSION%%.*}"  # v3 or v4: the module path carries the major version
tmp="$(mktemp -d "$DEST_DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo ">> building helm $HELM_VERSION from helm.sh/helm/$major (takes a few minutes on 2 cores)" >&2
# helm's Makefile stamps the Kubernetes version it assumes for `helm template` and `helm lint`
# (.Capabilities.KubeVersion) from its client-go version (v0.X.Y -> 1.X); without it helm claims
# Kubernetes 1.20 and refuses charts with a newer kubeVersion. Read it from helm's own go.mod.
gomod="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/$major@$HELM_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"  # e.g. v0.37.0
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
[[ "$k8s_minor" =~ ^[0-9]+$ ]] || { echo "cannot read k8s.io/client-go from $gomod" >&2; exit 1; }
ldflags="-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION"
for pkg in pkg/chartutil pkg/lint/rules; do
    ldflags+=" -X helm.sh/helm/$major/$pkg.k8sVersionMajor=1 -X helm.sh/helm/$major/$pkg.k8sVersionMinor=$k8s_minor"
done
# nice: the machine is shared with other builds; CGO off gives a static binary like the release one.
CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -buildvcs=false" nice -n 10 \
    go install -trimpath -ldflags "$ldflags" "helm.sh/helm/$major/cmd/helm@$HELM_VERSION" >&2
mv -f "$tmp/helm" "$DEST"
"$DEST" version --short >&2
echo "$DEST"
