#!/usr/bin/env bash
# The quickstart: builds tend, starts the local dev cluster (building the
# control plane once, about 8 min), applies examples/quickstart and shows
# the status.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
mkdir -p bin
go build -o bin/tend ./cmd/tend
# The machine agent, which `tend bootstrap machines` installs from beside tend.
CGO_ENABLED=0 go build -o bin/tend-node ./cmd/tend-node
KUBECONFIG=$(bin/tend dev up)
export KUBECONFIG
echo
echo "\$ tend apply --repo examples/quickstart --cluster dev"
bin/tend apply --repo examples/quickstart --cluster dev
echo
echo "\$ tend status --cluster dev"
bin/tend status --cluster dev
echo
echo "The dev cluster keeps running. Try:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  bin/tend diff --repo examples/quickstart --cluster dev"
echo "  bin/tend run --repo examples/quickstart --cluster dev"
echo "  bin/tend dev down"
