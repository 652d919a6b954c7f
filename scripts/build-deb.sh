#!/usr/bin/env bash
# Builds the Debian package of Sysvisor from this tree, as any user (no root needed):
#
#   scripts/build-deb.sh        ->  target/debian/sysvisor_<version>_<arch>.deb
#
# It holds /usr/bin/sysvisor-fs and /usr/bin/sysvisor-runc (`cargo build --release`,
# debug info stripped), the systemd unit /lib/systemd/system/sysvisor-fs.service (from
# packaging/), the docs under /usr/share/doc/sysvisor, and the maintainer scripts of
# packaging/deb/ with scripts/lib/host-setup.sh (the daemon.json and subuid editing that
# scripts/install.sh uses) copied into each. Install it with `dpkg -i` (then
# `apt-get install -f` if runc or python3 is missing), or `apt-get install ./FILE.deb`.
#
# Usage: scripts/build-deb.sh [options]
#   --fs-bin PATH --runc-bin PATH  package these binaries instead of building (both)
#   --version V                    package version (default: runtime/Cargo.toml's)
#   --output DIR                   where the .deb goes (default target/debian)
#   --compression TYPE             dpkg-deb's -Z: xz (default), gzip, zstd or none
#   -h, --help                     this text
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
fs_bin=
runc_bin=
version=
output="${CARGO_TARGET_DIR:-$repo/target}/debian"
compression=xz

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "build-deb.sh: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --fs-bin) fs_bin=${2:?}; shift ;;
        --runc-bin) runc_bin=${2:?}; shift ;;
        --version) version=${2:?}; shift ;;
        --output) output=${2:?}; shift ;;
        --compression) compression=${2:?}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (apt-get install dpkg)"
if [ -z "$version" ]; then
    version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/runtime/Cargo.toml" | head -n 1)"
fi
case "$version" in [0-9]*) ;; *) die "bad version '$version' (it must start with a digit)" ;; esac
if [ -z "$fs_bin" ] && [ -z "$runc_bin" ]; then
    echo "build-deb.sh: cargo build --release -p sysvisor-fs -p sysvisor-runc"
    (cd "$repo" && cargo build --release -p sysvisor-fs -p sysvisor-runc)
    fs_bin="${CARGO_TARGET_DIR:-$repo/target}/release/sysvisor-fs"
    runc_bin="${CARGO_TARGET_DIR:-$repo/target}/release/sysvisor-runc"
elif [ -z "$fs_bin" ] || [ -z "$runc_bin" ]; then
    die "give both --fs-bin and --runc-bin, or neither (to build them)"
fi
for bin in "$fs_bin" "$runc_bin"; do
    [ -f "$bin" ] && [ -x "$bin" ] || die "not an executable file: $bin"
done
arch="$(dpkg --print-architecture)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/sysvisor"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/doc/sysvisor"
for pair in "$fs_bin:sysvisor-fs" "$runc_bin:sysvisor-runc"; do
    dest="$root/usr/bin/${pair##*:}"
    strip --strip-debug -o "$dest" "${pair%:*}" 2>/dev/null || cp "${pair%:*}" "$dest"
    chmod 0755 "$dest"
done
# shellcheck source=lib/host-setup.sh
. "$repo/scripts/lib/host-setup.sh"
unit_for_bindir /usr/bin "$repo/packaging/sysvisor-fs.service" >"$root/lib/systemd/system/sysvisor-fs.service"
cp "$repo/README.md" "$repo"/docs/*.md "$root/usr/share/doc/sysvisor/"
printf 'Sysvisor\nLicense: Apache-2.0\n' >"$root/usr/share/doc/sysvisor/copyright"

for script in postinst prerm postrm; do
    {
        echo "#!/bin/bash"
        echo "# $script of the sysvisor package, made by scripts/build-deb.sh from packaging/deb/."
        cat "$repo/packaging/deb/common.sh" "$repo/scripts/lib/host-setup.sh" "$repo/packaging/deb/$script"
    } >"$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
done

# The C library version the binaries need (their newest GLIBC_ symbol version).
glibc="$(objdump -T "$root/usr/bin/sysvisor-fs" "$root/usr/bin/sysvisor-runc" 2>/dev/null \
    | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1 || true)"
libc_dep="libc6${glibc:+ (>= $glibc)}"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<CONTROL
Package: sysvisor
Version: $version
Architecture: $arch
Maintainer: Sysvisor developers <sysvisor@localhost>
Installed-Size: $size
Depends: $libc_dep, libgcc-s1, runc (>= 1.1), python3
Recommends: docker.io | docker-ce | containerd
Section: admin
Priority: optional
Description: system containers for Docker: own /proc and /sys views, user namespaces
 sysvisor-runc is a runc-compatible OCI runtime that turns a container into a
 system container (its own user namespace and id range, its own /proc and /sys
 views, mount and sysctl support, Docker inside); sysvisor-fs serves the views.
 Use it with docker run --runtime=sysvisor-runc.
CONTROL

mkdir -p "$output"
deb="$output/sysvisor_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compression" --build "$root" "$deb" >/dev/null
echo "build-deb.sh: built $deb"
