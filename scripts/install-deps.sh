#!/usr/bin/env bash
# Installs what building and testing Sysvisor needs on a Debian 12 machine. Idempotent and
# fast when everything is already there: apt-get runs only for packages whose tools are
# missing.
#
#   procps          free, vmstat, uptime, top (readers exercised by the integration tests)
#   busybox-static  busybox free/cat/uptime (readers exercised by the integration tests)
#   util-linux      unshare (private mount / pid namespaces for readers)
#   mount           mount, umount (bind-mounting views over /proc files)
#   coreutils       nproc, cat, ...
#   python3         concurrent readers, os.cpu_count()
#   libc-bin        getconf
#
# The Rust toolchain (cargo, from rustup) is expected to be installed already; it is looked
# for on PATH and in ~/.cargo/bin.
set -euo pipefail

# tool -> Debian package providing it
declare -A need=(
    [free]=procps
    [vmstat]=procps
    [uptime]=procps
    [top]=procps
    [busybox]=busybox-static
    [unshare]=util-linux
    [mount]=mount
    [umount]=mount
    [nproc]=coreutils
    [getconf]=libc-bin
    [python3]=python3
)

missing=()
for tool in "${!need[@]}"; do
    pkg=${need[$tool]}
    if [ "$tool" = python3 ]; then
        # The tests prefer Debian's /usr/bin/python3 (fast start); any python3 will do.
        [ -x /usr/bin/python3 ] || command -v python3 >/dev/null 2>&1 && continue
    elif command -v "$tool" >/dev/null 2>&1; then
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
