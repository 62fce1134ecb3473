#!/usr/bin/env bash
# One-time (idempotent) setup of a fresh Debian 12 root machine: system packages, kernel-headers link,
# and a venv on Debian's Python (BCC's Python bindings are a Debian package, not on PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.setup-done"
APT_PKGS="python3-bpfcc libbpfcc bpfcc-tools python3-venv python3-dev linux-headers-amd64 iproute2 \
iputils-ping netcat-openbsd curl iptables zsh fish \
containerd podman runc containernetworking-plugins busybox-static \
mmdebstrap umoci skopeo etcd-server openssl graphviz"
# the DNS proxy's wire format (dnspython, also on PyPI) and the DNS tests' server (dnsmasq without its service)
APT_PKGS="$APT_PKGS python3-dnspython dnsmasq-base"
# the UI's browser tests: Debian's Chromium and its WebDriver (tests/support/browser.py)
APT_PKGS="$APT_PKGS chromium chromium-driver"
# the L7 HTTP proxy the agent runs and configures (node/http_proxy/haproxy.py): Debian's HAProxy, not its service
APT_PKGS="$APT_PKGS haproxy"

# Quick when done: skip everything while this script, pyproject.toml and the kernel are what they were.
FINGERPRINT="$(cat "$0" pyproject.toml webui/package-lock.json | sha256sum | cut -c1-16) $(uname -r)"
UI_ASSET=ciliumctl/node/ui_static/vendor/cytoscape-fcose.js   # the last one build_ui.sh copies
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FINGERPRINT" ] && [ -e "/lib/modules/$(uname -r)/build" ] \
   && [ -f "$UI_ASSET" ]; then
  exit 0
fi

need_apt=0
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || { need_apt=1; break; }; done
if [ "$need_apt" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup: run as root to install system packages: $APT_PKGS" >&2; exit 2; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $APT_PKGS >/dev/null
fi

# BCC compiles against kernel headers; Debian's (older) headers serve networking programs when linked.
kdir="/lib/modules/$(uname -r)"
if [ "$(id -u)" = 0 ] && [ ! -e "$kdir/build" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
  if [ -n "$hdr" ] && [ -n "$common" ]; then
    mkdir -p "$kdir"
    ln -sfn "$hdr" "$kdir/build"
    ln -sfn "$common" "$kdir/source"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
# the UI's front-end libraries from npm, into the package (`ciliumctl ui` fetches nothing at run time)
./scripts/build_ui.sh
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

# Reference tools the tests run against (real hubble CLI, cnp-oracle, Kubernetes servers): shared/ sits beside the
# clone and is read-only in CI, so they are unpacked into .tools/bin (git-ignored; the tests unpack them too).
if [ -x ../shared/tools/unpack.sh ]; then
  ../shared/tools/unpack.sh .tools/bin >/dev/null
fi
echo "$FINGERPRINT" > "$STAMP"
