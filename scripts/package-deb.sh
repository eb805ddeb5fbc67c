#!/usr/bin/env bash
# Builds the edgeray .deb for a board from an already built binary.
#
#   scripts/package-deb.sh BINARY ARCH OUT_DIR      # ARCH: a Debian architecture (amd64, arm64)
#
# The package holds /usr/bin/edgeray, the `edgeray-node` systemd unit (config in
# /etc/edgeray/cluster.toml, state in /var/lib/edgeray, restart on failure, SIGTERM drains),
# the `edgeray` system user (systemd-sysusers) and the README. Its maintainer scripts honour
# DPKG_ROOT, so it also installs into a clean root (`dpkg --root`, as the packaging test does).
# Prints the path of the .deb. EDGERAY_DEB_COMPRESSION picks dpkg-deb's compressor (default xz;
# the packaging test uses none, for a debug binary of ~190 MB).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 3 ]; then
    echo "usage: $0 BINARY ARCH OUT_DIR   (ARCH: amd64 or arm64)" >&2
    exit 2
fi
bin=$1 arch=$2 out=$3
case "$arch" in
    amd64|arm64) ;;
    *) echo "error: unknown Debian architecture '$arch' (amd64 or arm64)" >&2; exit 2 ;;
esac
if [ ! -x "$bin" ]; then
    echo "error: '$bin' is not an executable (build it first, e.g. cargo build --release)" >&2
    exit 1
fi
command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb is not installed" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "error: no version in Cargo.toml" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/edgeray_${version}_${arch}
install -D -m 0755 "$bin" "$root/usr/bin/edgeray"
install -D -m 0644 packaging/edgeray-node.service "$root/lib/systemd/system/edgeray-node.service"
install -D -m 0644 packaging/edgeray.sysusers "$root/usr/lib/sysusers.d/edgeray.conf"
install -D -m 0644 README.md "$root/usr/share/doc/edgeray/README.md"
install -d -m 0755 "$root/etc/edgeray"
install -d -m 0755 "$root/DEBIAN"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: edgeray
Version: $version
Architecture: $arch
Maintainer: edgeray developers <edgeray@localhost>
Installed-Size: $size
Depends: libc6
Recommends: systemd
Section: net
Priority: optional
Homepage: https://github.com/edgeray/edgeray
Description: actor cluster runtime that runs a quantized LLM across edge boards
 edgeray turns a handful of boards on one LAN into one machine running a
 quantized LLM: nodes find each other by mDNS and form a mutual-TLS QUIC
 cluster; a scheduler places the model's layers by each board's memory and
 power budget. This package runs "edgeray node" as the edgeray-node service.
CONTROL
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # The system user (works in a clean root too: DPKG_ROOT).
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers ${DPKG_ROOT:+--root="$DPKG_ROOT"} edgeray.conf
    fi
    mkdir -p "$DPKG_ROOT/var/lib/edgeray"
    chmod 0700 "$DPKG_ROOT/var/lib/edgeray"
    if [ -z "$DPKG_ROOT" ] && getent passwd edgeray >/dev/null; then
        chown edgeray:edgeray /var/lib/edgeray
    fi
    if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl enable edgeray-node.service || true
        if [ -f /etc/edgeray/cluster.toml ]; then
            systemctl restart edgeray-node.service || true
        else
            echo "edgeray: put the cluster's cluster.toml in /etc/edgeray/ (edgeray init on the first board), then: systemctl start edgeray-node"
        fi
    fi
fi
exit 0
SCRIPT
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    # SIGTERM: the node drains before it stops.
    systemctl stop edgeray-node.service || true
    systemctl disable edgeray-node.service || true
fi
exit 0
SCRIPT
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf "$DPKG_ROOT/var/lib/edgeray"
fi
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$out"
deb=$out/edgeray_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"${EDGERAY_DEB_COMPRESSION:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"
