#!/usr/bin/env bash
# `make image`: the images a cluster needs, built here from Debian packages and this project, without any
# registry (none is reachable; kubelets are told imagePullPolicy: Never).
#   ciliumctl:local        the agent: a minimal Debian 12 root (mmdebstrap) with python3-bpfcc, the project in a
#                          venv; two layers, so a change to the project rebuilds only the top one
#   ciliumctl-test:local   test pods: Debian 12 essential with python3, busybox (sh, nc, wget, ping, httpd) and
#                          dnsmasq (dnsmasq-base: the binary alone, a DNS server of the test's own names)
#   ciliumctl-pause:local  the kubelet's sandbox image: busybox-static only
# Packed with umoci, exported with skopeo as docker-archive tars (they load with `ctr images import` and
# `podman load`). Each tar is kept in $CILIUMCTL_IMAGE_DIR under a hash of its inputs and rebuilt only when
# those change. Prints one line per image: "<reference> <tar path> <size>".
#
# usage: scripts/image.sh [agent|test|pause]...   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${CILIUMCTL_IMAGE_DIR:-/var/cache/ciliumctl-images}
SUITE=bookworm
SOURCES=${CILIUMCTL_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
VENV_PY=/opt/ciliumctl/venv/bin/python
# BCC and its Python bindings; iproute2 to look around a node; host-local and loopback (the IPAM and lo plugins
# the init step puts beside ciliumctl-cni on the host; the other reference plugins are left out)
# haproxy: the L7 HTTP proxy the agent runs (node/http_proxy/haproxy.py)
AGENT_PKGS="python3-bpfcc,python3-venv,iproute2,containernetworking-plugins,haproxy"
# dnsmasq-base: the DNS server pod of the DNS-aware policy test (tests/k8s/test_cluster_fqdn.py)
TEST_PKGS="python3,busybox-static,dnsmasq-base"
# docs, manuals and translations are not needed in an image
SLIM=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
      --dpkgopt='path-exclude=/usr/lib/cni/*' --dpkgopt='path-include=/usr/lib/cni/host-local'
      --dpkgopt='path-include=/usr/lib/cni/loopback')

for tool in mmdebstrap umoci skopeo; do
  command -v "$tool" >/dev/null || { echo "image: $tool is missing (run scripts/setup.sh as root)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "image: run as root (mmdebstrap and umoci unpack need it)" >&2; exit 2; }
mkdir -p "$OUT"
OCI="$OUT/oci"   # one OCI layout for all images: layers they share are stored once
[ -d "$OCI" ] || umoci init --layout "$OCI"

hash_of() { sha256sum | cut -c1-16; }
# the venv's pip (or Debian's); warnings about this machine's pip configuration are noise here
pip_cmd() {
  local pip=(/usr/bin/python3 -m pip)
  [ -x .venv/bin/pip ] && pip=(.venv/bin/pip)
  "${pip[@]}" --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
size_of() { du -h "$1" | cut -f1; }
work=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# older builds of an image are of no more use: their tars, tags and blobs go
prune() {  # name kept-tar
  local old
  for old in "$OUT"/ciliumctl-"$1"-*.tar; do [ "$old" = "$2" ] || rm -f "$old"; done
  for old in $(umoci ls --layout "$OCI" | grep "^$1-[0-9a-f]*\$" | grep -vx "$1-$(basename "$2" .tar | sed 's/.*-//')"); do
    umoci rm --image "$OCI:$old"
  done
  umoci gc --layout "$OCI"
}

# docker-archive tar of an OCI tag, named so both runtimes import it as <ref>
export_tar() {  # tag ref tar
  rm -f "$3.tmp"
  skopeo copy -q "oci:$OCI:$1" "docker-archive:$3.tmp:$2"
  mv "$3.tmp" "$3"
}

# a tag made from a root directory in one layer, with an image config
pack_root() {  # tag rootdir "cmd words" PATH
  local tag=$1 root=$2 cmd=() word
  for word in $3; do cmd+=(--config.cmd "$word"); done
  umoci new --image "$OCI:$tag"
  umoci insert --image "$OCI:$tag" "$root" /
  umoci config --image "$OCI:$tag" --os linux --architecture amd64 --config.workingdir / \
    --config.env "PATH=$4" "${cmd[@]}" --history.created_by "scripts/image.sh"
}

debian_root() {  # dir packages
  mmdebstrap --quiet --variant=essential --include="$2" "${SLIM[@]}" \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
    "$SUITE" "$1" "$SOURCES" >/dev/null
}

# ---------------------------------------------------------------------------------------------- pause
pause() {
  local key tar
  key=$( { echo pause-v1; sha256sum /usr/bin/busybox; } | hash_of)
  tar="$OUT/ciliumctl-pause-$key.tar"
  if [ ! -f "$tar" ]; then
    local root="$work/pause"
    mkdir -p "$root/bin"
    cp /usr/bin/busybox "$root/bin/busybox"
    ln -s busybox "$root/bin/sleep"
    ln -s busybox "$root/bin/sh"
    # the sandbox holds the pod's namespaces; it only has to sleep (SIGKILL ends it)
    pack_root "pause-$key" "$root" "/bin/sleep infinity" "/bin"
    export_tar "pause-$key" ciliumctl-pause:local "$tar"
    prune pause "$tar"
  fi
  echo "ciliumctl-pause:local $tar $(size_of "$tar")"
}

# ---------------------------------------------------------------------------------------------- test
testimage() {
  local key tar
  key=$( { echo test-v1 "$TEST_PKGS" "${SLIM[*]}"; } | hash_of)
  tar="$OUT/ciliumctl-test-$key.tar"
  if [ ! -f "$tar" ]; then
    local root="$work/test"
    debian_root "$root" "$TEST_PKGS"
    # busybox's applets the tests use, where Debian has no program of that name
    for applet in nc wget ping httpd ip; do
      [ -e "$root/usr/bin/$applet" ] || [ -e "$root/bin/$applet" ] || ln -s /bin/busybox "$root/usr/bin/$applet"
    done
    pack_root "test-$key" "$root" "sleep infinity" "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    export_tar "test-$key" ciliumctl-test:local "$tar"
    prune test "$tar"
  fi
  echo "ciliumctl-test:local $tar $(size_of "$tar")"
}

# ---------------------------------------------------------------------------------------------- agent
# Layer 1: Debian + BCC + a venv holding the project's dependencies (wheels fetched on this machine with pip).
# Layer 2: the project itself (the package with its bpf/ sources), installed into that venv.
agent_deps() {
  /usr/bin/python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))'
}

agent_base() {
  local key
  key=$( { echo agent-base-v1 "$AGENT_PKGS" "${SLIM[*]}"; agent_deps; } | hash_of)
  BASE_TAG="agent-base-$key"
  BASE_ROOT="$OUT/$BASE_TAG.rootfs"    # kept: the project layer is made on top of it, without unpacking
  if ! umoci stat --image "$OCI:$BASE_TAG" >/dev/null 2>&1 || [ ! -d "$BASE_ROOT" ]; then
    local root="$work/agent" wheels="$work/wheels"
    agent_deps > "$work/requirements.txt"
    pip_cmd wheel -q -w "$wheels" -r "$work/requirements.txt"
    mmdebstrap --quiet --variant=essential --include="$AGENT_PKGS" "${SLIM[@]}" \
      --customize-hook="copy-in $wheels $work/requirements.txt /tmp" \
      --customize-hook='chroot "$1" /usr/bin/python3 -m venv --system-site-packages /opt/ciliumctl/venv' \
      --customize-hook='chroot "$1" /opt/ciliumctl/venv/bin/pip install -q --no-index --disable-pip-version-check --find-links /tmp/wheels -r /tmp/requirements.txt' \
      --customize-hook='rm -rf "$1"/tmp/wheels "$1"/tmp/requirements.txt "$1"/root/.cache "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
      "$SUITE" "$root" "$SOURCES" > /dev/null 2> >(grep -v "^WARNING: Location" >&2)
    umoci rm --image "$OCI:$BASE_TAG" 2>/dev/null || true
    pack_root "$BASE_TAG" "$root" "ciliumctl agent run" \
      "/opt/ciliumctl/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    rm -rf "$OUT"/agent-base-*.rootfs
    mv "$root" "$BASE_ROOT"
  fi
}

agent() {
  agent_base
  local key tar
  key=$( { echo "$BASE_TAG"; git ls-files -co --exclude-standard -- pyproject.toml ciliumctl bpf \
           | grep -v -e '__pycache__' -e '\.pyc$' | sort | xargs -d '\n' sha256sum 2>/dev/null; } | hash_of)
  tar="$OUT/ciliumctl-agent-$key.tar"
  if [ ! -f "$tar" ]; then
    local tag="agent-$key" upper="$work/upper" layer="$work/layer"
    pip_cmd wheel -q --no-deps --no-build-isolation -w "$work/project" . >/dev/null
    local wheel
    wheel=$(basename "$work"/project/ciliumctl-*.whl)
    mkdir -p "$upper" "$work/ovl-work" "$work/merged"
    # pip installs the project into the base's venv on an overlay (in a mount namespace of its own): what it
    # writes lands in $upper, which becomes the layer; the datapath's C sources go where
    # ciliumctl.base.paths.bpf_src_dir() looks in an installed package
    unshare --mount --propagation private sh -euc '
      mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
      cp "$5/$6" "$4/tmp/"
      chroot "$4" "$7" -m pip install -q --no-deps --no-index --no-compile --disable-pip-version-check "/tmp/$6"
      rm -f "$4/tmp/$6"
      site=$(chroot "$4" "$7" -c "import ciliumctl, os; print(os.path.dirname(ciliumctl.__file__))")
      cp -r bpf "$4$site/bpf"
      find "$4$site" -name __pycache__ -prune -exec rm -rf {} +
    ' sh "$BASE_ROOT" "$upper" "$work/ovl-work" "$work/merged" "$work/project" "$wheel" "$VENV_PY"
    rm -rf "$upper/root" "$upper/tmp"
    # a plain copy: overlayfs marks its upper directory with trusted.overlay.* attributes no image should carry
    cp -r --preserve=mode,ownership,timestamps,links "$upper" "$layer"
    umoci rm --image "$OCI:$tag" 2>/dev/null || true
    umoci tag --image "$OCI:$BASE_TAG" "$tag"
    umoci insert --image "$OCI:$tag" "$layer" /
    export_tar "$tag" ciliumctl:local "$tar"
    prune agent "$tar"
  fi
  echo "ciliumctl:local $tar $(size_of "$tar")"
}

[ $# -gt 0 ] || set -- agent test pause
for what in "$@"; do
  case "$what" in
    agent) agent ;;
    test) testimage ;;
    pause) pause ;;
    *) echo "image: unknown image $what (agent, test or pause)" >&2; exit 2 ;;
  esac
done
