#!/usr/bin/env bash
# The rootfs tarball of the e2e image "bookworm-systemd-docker": Debian bookworm
# (debootstrap, minbase) with systemd as /sbin/init, Docker (docker.io: dockerd, containerd,
# runc), iptables and busybox-static from Debian's packages. No registry is needed: the
# harness `docker import`s the tarball (tests/src/images.rs).
#
#   tests/images/bookworm-systemd-docker.sh        # prints the tarball's path (last line)
#
# The tarball is cached as $SYSVISOR_E2E_CACHE/bookworm-systemd-docker-KEY.tar (default
# cache /var/cache/sysvisor-e2e), KEY being a hash of this script (which holds the package
# list and every step), so a later run only imports it; editing the script builds a new one
# and removes the older ones. Concurrent callers wait for one build (flock). Needs root,
# debootstrap (installed with apt-get when missing) and the mirror $SYSVISOR_E2E_MIRROR
# (default http://deb.debian.org/debian). docs/nested.md has the same image as a Dockerfile.
set -euo pipefail

NAME=bookworm-systemd-docker
SUITE=bookworm
PACKAGES=(
    systemd systemd-sysv dbus            # init
    docker.io iptables                   # the inner Docker (pulls containerd, runc, tini)
    busybox-static                       # a tiny rootfs for inner images, without a registry
    ca-certificates iproute2 procps kmod less
)
MIRROR="${SYSVISOR_E2E_MIRROR:-http://deb.debian.org/debian}"
CACHE="${SYSVISOR_E2E_CACHE:-/var/cache/sysvisor-e2e}"

key="$(sha256sum "$0" | cut -c1-16)"
tarball="$CACHE/$NAME-$key.tar"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -s "$tarball" ]; then
    echo "$tarball"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "$NAME: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2
fi

work="$(mktemp -d "$CACHE/build.XXXXXX")"
root="$work/root"
cleanup() {
    # debootstrap mounts /proc and /sys in the target while it works; a failed run can
    # leave them (deepest first), and nothing mounted may be removed.
    awk -v w="$work" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo \
        | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

started=$(date +%s)
echo "$NAME: debootstrap $SUITE (${PACKAGES[*]}) from $MIRROR" >&2
include="$(IFS=,; echo "${PACKAGES[*]}")"
debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}

# A machine id per container: systemd makes one at boot when the file is empty.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# No unit is masked: debugfs, tracefs and the like, which no user namespace may mount,
# are answered by sysvisor-fs' mount trap with empty file systems (docs/mounttrap.md).
# Until /proc/sys/net is writable inside (Docker mounts /proc/sys read-only), the inner
# dockerd cannot enable IP forwarding and refuses to start unless told not to.
mkdir -p "$root/etc/docker"
echo '{"ip-forward": false}' >"$root/etc/docker/daemon.json"
# Smaller, and no stale package lists in the image.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
    "$root"/dev/* "$root"/tmp/* "$root"/var/tmp/*

tar -C "$root" --numeric-owner --xattrs -cf "$work/$NAME.tar" .
mv "$work/$NAME.tar" "$tarball"
# Older builds of this image (other keys) are stale.
find "$CACHE" -maxdepth 1 -name "$NAME-*.tar" ! -name "$(basename "$tarball")" -delete
echo "$NAME: built $tarball ($(du -m "$tarball" | cut -f1) MB) in $(( $(date +%s) - started ))s" >&2
echo "$tarball"
