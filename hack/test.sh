#!/usr/bin/env bash
# The full test suite, from a fresh machine with Go: installs what the tests
# need (Debian packages, the Kubernetes control plane built from Go modules,
# cached under $HOME/.cache/tend), then runs every test against the real
# components. Re-runs reuse the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

need=()
command -v git >/dev/null || need+=(git)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# Test machines: a debootstrapped Debian booted by systemd-nspawn, a local
# apt repository built with dpkg-dev, and nftables.
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v dpkg-scanpackages >/dev/null || need+=(dpkg-dev)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
# Backups: restic drives the repositories; zstd is the benchmark's baseline.
command -v restic >/dev/null || need+=(restic)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  echo ">> installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo ">> control plane (built once into ${TEND_CACHE:-$HOME/.cache/tend})"
bash internal/devcluster/build-controlplane.sh >/dev/null

CACHE=${TEND_CACHE:-$HOME/.cache/tend}
if [ ! -x "$CACHE/bin/registry" ]; then
  echo ">> OCI registry (go-containerregistry cmd/registry)"
  GOBIN="$CACHE/bin" CGO_ENABLED=0 go install github.com/google/go-containerregistry/cmd/registry@v0.22.1
fi

if [ ! -x "$CACHE/bin/sops" ]; then
  echo ">> sops CLI (a real peer for the SOPS interop tests)"
  GOBIN="$CACHE/bin" CGO_ENABLED=0 go install github.com/getsops/sops/v3/cmd/sops@v3.13.3
fi

if [ ! -x "$CACHE/bin/versitygw" ]; then
  echo ">> S3 server (versitygw, once, about 140 s)"
  GOBIN="$CACHE/bin" CGO_ENABLED=0 go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi

if [ ! -x "$CACHE/machines/bookworm/usr/lib/systemd/systemd" ]; then
  echo ">> test machine image (debootstrap, once, into $CACHE/machines)"
  mkdir -p "$CACHE/machines"
  bash internal/testenv/build-machine-image.sh "$CACHE/machines/bookworm"
fi

echo ">> go vet"
go vet ./...
echo ">> go test"
go test -count=1 -timeout 30m "$@" ./...
