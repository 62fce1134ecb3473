#!/usr/bin/env bash
# The UI's front-end libraries (`ciliumctl ui`): from npm at build time (versions and checksums in
# webui/package-lock.json), copied into the package so that the page works with no network at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENDOR=ciliumctl/node/ui_static/vendor
if ! command -v npm >/dev/null; then
  echo "build_ui: npm is missing; install Node.js and npm (Debian: apt-get install npm) to build the UI assets" >&2
  exit 2
fi
(cd webui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p "$VENDOR"
M=webui/node_modules
cp $M/cytoscape/dist/cytoscape.min.js "$VENDOR/cytoscape.min.js"
# fCoSE lays out compound nodes (namespaces) well; its UMD builds find each other as globals, in this order
cp $M/layout-base/layout-base.js $M/cose-base/cose-base.js $M/cytoscape-fcose/cytoscape-fcose.js "$VENDOR/"
for p in cytoscape layout-base cose-base cytoscape-fcose; do cp "$M/$p/LICENSE" "$VENDOR/$p.LICENSE"; done
