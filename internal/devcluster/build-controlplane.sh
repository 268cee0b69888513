#!/usr/bin/env bash
# build-controlplane.sh: builds the real Kubernetes control plane used by tests
# and `tend dev up` from Go modules, once, into $HOME/.cache/tend/k8s/<version>/bin.
# Re-running is cheap: binaries that exist are kept.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
ROOT=${TEND_CACHE:-$HOME/.cache/tend}/k8s/$K8S_VERSION
BIN=$ROOT/bin
mkdir -p "$BIN" "$ROOT/kbuild" "$ROOT/etcdbuild"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local

if [ ! -x "$BIN/etcd" ]; then
  echo ">> building etcd $ETCD_VERSION" >&2
  cd "$ROOT/etcdbuild"
  if [ ! -f go.sum ]; then
    printf 'module local/etcdbuild\n\ngo 1.26\n' > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go get go.etcd.io/etcd/server/v3@$ETCD_VERSION
    go mod tidy
  fi
  go build -trimpath -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

need=""
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$BIN/$b" ] || need="$need k8s.io/kubernetes/cmd/$b"
done
if [ -n "$need" ]; then
  echo ">> building$need ($K8S_VERSION); about 8 min cold on 2 cores" >&2
  cd "$ROOT/kbuild"
  if [ ! -f go.sum ]; then
    SV=v0.${K8S_VERSION#v1.}
    KMOD=$(go mod download -json k8s.io/kubernetes@$K8S_VERSION | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    GOV=$(awk '$1=="go"{print $2; exit}' "$KMOD")
    {
      printf 'module local/k8sbuild\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$GOV" "$K8S_VERSION"
      required=$(sed -n '/^require (/,/^)/p' "$KMOD" | awk '{print $1}')
      awk '/=> \.\/staging\/src\//{print $1}' "$KMOD" | while read -r m; do
        if grep -qx "$m" <<<"$required"; then printf '\t%s => %s %s\n' "$m" "$m" "$SV"; fi
      done
      printf ')\n'
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' > tools.go
    go mod tidy
  fi
  MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
  LD=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LD="$LD -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  mkdir -p "$ROOT/tmpbin"
  go build -trimpath -ldflags "-s -w $LD" -o "$ROOT/tmpbin/" $need
  mv "$ROOT"/tmpbin/* "$BIN/"
fi

if [ ! -x "$BIN/kwok" ]; then
  echo ">> building kwok $KWOK_VERSION" >&2
  GOBIN="$ROOT/tmpbin" go install -trimpath sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION
  mv "$ROOT/tmpbin/kwok" "$BIN/kwok"
  # kwok's stage files ship in the module; keep a copy beside the binary.
  d=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  [ -d "$d" ] || (cd "$ROOT/etcdbuild" && go mod download sigs.k8s.io/kwok@$KWOK_VERSION)
  rm -rf "$BIN/kwok-stage"; cp -r "$d" "$BIN/kwok-stage"; chmod -R u+w "$BIN/kwok-stage"
fi
echo "$BIN"
