#!/usr/bin/env bash
# Installs what building and testing Sysvisor needs on a Debian 12 machine, before any test
# runs: a test must never skip because what it needs arrives later (as runc used to, with
# docker.io, after the runtime tests had run). Idempotent and fast when everything is
# already there: apt-get runs only for packages whose tools are missing.
#
#   procps          free, vmstat, uptime, top (readers exercised by the integration tests)
#   busybox-static  busybox free/cat/uptime (readers), the e2e image, runc's test rootfs
#   util-linux      unshare, nsenter, losetup (namespaces for readers, loop devices)
#   mount           mount, umount (bind-mounting views over /proc files)
#   coreutils       nproc, cat, ...
#   python3         concurrent readers, os.cpu_count()
#   libc-bin        getconf
#   runc            the reference engine of the runtime tests (runtime/tests/rootfs.rs)
#   containerd      the private e2e engine's containerd
#   docker.io       dockerd and the docker CLI of the e2e tests and the lifecycle benchmark
#   lxcfs           the benchmark's reference file system
#   iproute2        ip (the e2e engine's bridge)
#   bsdutils        script (a pty for `docker run -t` tests)
#   e2fsprogs       mkfs.ext4 (the runtime's volume tests)
#   file            file (is busybox static?)
#   gzip            zcat (the kernel's /proc/config.gz, to check the measured HZ)
#   tar, git        the e2e image, the fixtures' provenance
#   gcc, libc6-dev  static C attack and timing tools of the e2e tests (tests/tools/*.c)
#
# The Rust toolchain (cargo, from rustup) is expected to be installed already; it is looked
# for on PATH and in ~/.cargo/bin. As root, or through sudo when it is there.
set -euo pipefail

# tool -> Debian package providing it
declare -A need=(
    [free]=procps
    [vmstat]=procps
    [uptime]=procps
    [top]=procps
    [busybox]=busybox-static
    [unshare]=util-linux
    [nsenter]=util-linux
    [losetup]=mount
    [mount]=mount
    [umount]=mount
    [nproc]=coreutils
    [getconf]=libc-bin
    [python3]=python3
    [runc]=runc
    [containerd]=containerd
    [dockerd]=docker.io
    [docker]=docker.io
    [lxcfs]=lxcfs
    [ip]=iproute2
    [script]=bsdutils
    [mkfs.ext4]=e2fsprogs
    [file]=file
    [zcat]=gzip
    [tar]=tar
    [git]=git
    [gcc]=gcc
    [libc.a]=libc6-dev
)

missing=()
for tool in "${!need[@]}"; do
    pkg=${need[$tool]}
    if [ "$tool" = python3 ]; then
        # The tests prefer Debian's /usr/bin/python3 (fast start); any python3 will do.
        [ -x /usr/bin/python3 ] || command -v python3 >/dev/null 2>&1 && continue
    elif [ "$tool" = libc.a ]; then
        # `gcc -static` needs glibc's static archive.
        [ -e /usr/lib/x86_64-linux-gnu/libc.a ] && continue
    elif [ "$tool" = busybox ]; then
        # Debian's busybox package is dynamically linked: the images need the static one.
        file -L /bin/busybox 2>/dev/null | grep -q "statically linked" && continue
    elif command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ]; then
        continue
    fi
    case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    SUDO=
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=sudo
        else
            echo "install-deps: not root and no sudo; install ${missing[*]} by hand" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
else
    echo "install-deps: system packages present"
fi

# Rust toolchain.
if ! command -v cargo >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found (expected a rustup toolchain in ~/.cargo/bin)" >&2
    exit 1
fi
echo "install-deps: $(cargo --version)"
