#!/usr/bin/env bash
# `make cluster` / `make cluster-down`: a real Kubernetes cluster on this machine (tests/k8s/cluster.py says how),
# with the agent installed and the test image imported. `up` ends by printing `export KUBECONFIG=<path>`.
# usage: scripts/cluster.sh up|down   (NODES=2 for two nodes)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python tests/k8s/cluster.py "$@"
