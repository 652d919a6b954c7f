#!/usr/bin/env bash
# Installs Sysvisor on this host, as root, in one command:
#
#   1. the binaries sysvisor-fs and sysvisor-runc into PREFIX/bin (default /usr/local/bin),
#      built with `cargo build --release` unless given prebuilt ones;
#   2. the systemd unit of the sysvisor-fs daemon (/etc/systemd/system/sysvisor-fs.service);
#   3. the uid/gid pool of system containers: a "sysvisor:BASE:67108864" line in /etc/subuid
#      and /etc/subgid when missing (BASE 65536-aligned, >= 100000, after every other entry);
#   4. the runtime in Docker's /etc/docker/daemon.json ("runtimes": {"sysvisor-runc":
#      {"path": "PREFIX/bin/sysvisor-runc"}}, other keys kept; the file is made if missing),
#      then reloads a running dockerd (SIGHUP);
#   5. starts the sysvisor-fs daemon (systemctl enable --now) when systemd runs the host,
#      else says how to start it.
#
# Idempotent: a second run changes nothing and reloads nothing. `--uninstall` undoes it all
# (state under /var/lib/sysvisor is kept unless --purge).
#
# Usage: scripts/install.sh [options]
#   --fs-bin PATH        install this sysvisor-fs instead of building
#   --runc-bin PATH      install this sysvisor-runc instead of building
#   --prefix DIR         install prefix (default /usr/local): binaries go to DIR/bin
#   --docker-config FILE Docker's daemon.json (default /etc/docker/daemon.json)
#   --destdir DIR        stage every file under DIR (packaging, tests): no root needed, and
#                        nothing is started, reloaded or installed with apt-get
#   --no-start           do not start (or enable) the sysvisor-fs daemon
#   --uninstall          remove what the install added
#   --purge              with --uninstall: also remove /var/lib/sysvisor (id range and
#                        registry state)
#   --force              with --uninstall: even while containers of the runtime exist
#   -h, --help           this text
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/usr/local
destdir=
fs_bin=
runc_bin=
docker_config=/etc/docker/daemon.json
start=1
uninstall=0
purge=0
force=0
pool_count=67108864 # 1024 ranges of 65536 ids
runtime_name=sysvisor-runc

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --fs-bin) fs_bin=${2:?}; shift ;;
        --runc-bin) runc_bin=${2:?}; shift ;;
        --prefix) prefix=${2:?}; shift ;;
        --docker-config) docker_config=${2:?}; shift ;;
        --destdir) destdir=${2:?}; shift ;;
        --no-start) start=0 ;;
        --uninstall) uninstall=1 ;;
        --purge) purge=1 ;;
        --force) force=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

case "$prefix" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
prefix=${prefix%/}
[ -n "$destdir" ] && destdir="$(mkdir -p "$destdir" && cd "$destdir" && pwd)"
bindir="$prefix/bin"
unit_name=sysvisor-fs.service
unit_path=/etc/systemd/system/$unit_name
subuid=/etc/subuid
subgid=/etc/subgid
state_dir=/var/lib/sysvisor
# Every host path, as written: under DESTDIR when staging.
d() { echo "$destdir$1"; }

live=1 # act on the running system (services, dockerd, apt)
[ -n "$destdir" ] && live=0
if [ "$live" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0 ...), or stage with --destdir DIR"
fi
sv_prog=install.sh
# shellcheck source=lib/host-setup.sh
. "$repo/scripts/lib/host-setup.sh"

# ---- helpers -------------------------------------------------------------------------

ensure_python() {
    command -v python3 >/dev/null 2>&1 && return 0
    if [ "$live" = 1 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing python3 (used to edit $docker_config)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 </dev/null
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to edit $docker_config"
}

# install_file SRC DEST MODE: copies atomically (a running binary is replaced, not
# rewritten); prints whether it changed.
install_file() {
    local src=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        say "up to date: $dest"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp="$(dirname "$dest")/.$(basename "$dest").install.$$"
    cp "$src" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    say "installed: $dest"
    changed=1
}

find_cargo() {
    command -v cargo 2>/dev/null && return 0
    local home
    for home in "$HOME" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)"}; do
        [ -x "$home/.cargo/bin/cargo" ] && { echo "$home/.cargo/bin/cargo"; return 0; }
    done
    return 1
}

build_binaries() {
    local cargo
    cargo="$(find_cargo)" || die "cargo not found: install a Rust toolchain (rustup), or pass --fs-bin and --runc-bin"
    local owner
    owner="$(stat -c %U "$repo")"
    say "building: cargo build --release -p sysvisor-fs -p sysvisor-runc"
    if [ "$(id -u)" = 0 ] && [ "$owner" != root ] && [ "${SUDO_USER:-}" = "$owner" ] && command -v sudo >/dev/null 2>&1; then
        # Build as the user who owns the tree (under sudo), so target/ stays theirs.
        (cd "$repo" && sudo -u "$owner" -H env "PATH=$(dirname "$cargo"):$PATH" \
            cargo build --release -p sysvisor-fs -p sysvisor-runc)
    else
        (cd "$repo" && "$cargo" build --release -p sysvisor-fs -p sysvisor-runc)
    fi
    local target="${CARGO_TARGET_DIR:-$repo/target}"
    fs_bin="$target/release/sysvisor-fs"
    runc_bin="$target/release/sysvisor-runc"
}

fs_daemon_answers() { [ -S /run/sysvisor/fs.sock ] && pidof sysvisor-fs >/dev/null 2>&1; }

# ---- uninstall -----------------------------------------------------------------------

if [ "$uninstall" = 1 ]; then
    ensure_python
    edit_daemon_json check "" "$(d "$docker_config")"
    if [ "$live" = 1 ] && [ "$force" = 0 ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        users="$(docker ps -aq | xargs -r docker inspect -f '{{.Name}} {{.HostConfig.Runtime}}' 2>/dev/null \
            | awk -v r="$runtime_name" '$2 == r {print substr($1, 2)}' | tr '\n' ' ')"
        if [ -n "$users" ]; then
            die "containers of the $runtime_name runtime still exist: $users(docker rm -f them, or pass --force)"
        fi
    fi
    if systemd_runs; then
        systemctl disable --now "$unit_name" 2>/dev/null && say "stopped and disabled $unit_name" || true
    fi
    if [ -e "$(d "$unit_path")" ]; then
        rm -f "$(d "$unit_path")"
        say "removed $(d "$unit_path")"
        systemd_runs && systemctl daemon-reload
    fi
    dockerd_runs=0
    [ "$live" = 1 ] && [ -n "$(dockerd_pids)" ] && dockerd_runs=1
    result="$(SYSVISOR_DOCKERD_RUNS=$dockerd_runs edit_daemon_json remove "" "$(d "$docker_config")")"
    if [ "$result" = changed ]; then
        say "removed the $runtime_name runtime from $(d "$docker_config")"
        reload_dockerd 0
    fi
    edit_subids remove "$pool_count" "$(d "$subuid")" "$(d "$subgid")" | grep -v '^\(un\)\{0,1\}changed$' | sed 's/^/install.sh: /' || true
    for bin in sysvisor-fs sysvisor-runc; do
        if [ -e "$(d "$bindir/$bin")" ]; then
            rm -f "$(d "$bindir/$bin")"
            say "removed $(d "$bindir/$bin")"
        fi
    done
    if [ "$purge" = 1 ]; then
        rm -rf "$(d "$state_dir")" && say "removed $(d "$state_dir")"
    elif [ -d "$(d "$state_dir")" ]; then
        say "kept $(d "$state_dir") (id range and registry state; --purge removes it)"
    fi
    if [ "$live" = 1 ] && ! systemd_runs && pidof sysvisor-fs >/dev/null 2>&1; then
        say "a sysvisor-fs process still runs (pid $(pidof sysvisor-fs)): stop it with kill -TERM once no container needs it"
    fi
    say "uninstalled"
    exit 0
fi

# ---- install -------------------------------------------------------------------------

ensure_python
# Everything that can be checked is checked before anything is changed.
edit_daemon_json check "" "$(d "$docker_config")"
[ -f "$repo/packaging/$unit_name" ] || die "missing $repo/packaging/$unit_name"
if [ -z "$fs_bin" ] && [ -z "$runc_bin" ]; then
    build_binaries
elif [ -z "$fs_bin" ] || [ -z "$runc_bin" ]; then
    die "give both --fs-bin and --runc-bin, or neither (to build them)"
fi
for bin in "$fs_bin" "$runc_bin"; do
    [ -f "$bin" ] && [ -x "$bin" ] || die "not an executable file: $bin"
done
if [ "$live" = 1 ] && ! command -v runc >/dev/null 2>&1 && [ ! -x /usr/sbin/runc ]; then
    if command -v apt-get >/dev/null 2>&1; then
        say "installing runc (sysvisor-runc hands every container to it)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc </dev/null
    else
        say "warning: runc not found; sysvisor-runc needs it (or its path in /etc/sysvisor/runc-path)"
    fi
fi

changed=0
install_file "$fs_bin" "$(d "$bindir/sysvisor-fs")" 0755
fs_changed=$changed
install_file "$runc_bin" "$(d "$bindir/sysvisor-runc")" 0755

# The unit, with ExecStart pointing at this prefix.
unit_tmp="$(mktemp)"
trap 'rm -f "$unit_tmp"' EXIT
unit_for_bindir "$bindir" "$repo/packaging/$unit_name" >"$unit_tmp"
changed=0
install_file "$unit_tmp" "$(d "$unit_path")" 0644
unit_changed=$changed

subids="$(edit_subids add "$pool_count" "$(d "$subuid")" "$(d "$subgid")")"
echo "$subids" | grep -v '^\(un\)\{0,1\}changed$' | sed 's/^/install.sh: /' || true
[ "$(echo "$subids" | tail -n 1)" = unchanged ] && say "up to date: sysvisor entries of $(d "$subuid") and $(d "$subgid")"

result="$(edit_daemon_json add "$bindir/$runtime_name" "$(d "$docker_config")")"
if [ "$result" = changed ]; then
    say "added the $runtime_name runtime to $(d "$docker_config")"
    reload_dockerd
else
    say "up to date: $(d "$docker_config")"
fi

if [ "$live" = 0 ]; then
    say "staged under $destdir (nothing started)"
elif systemd_runs; then
    [ "$unit_changed" != 0 ] && systemctl daemon-reload
    if [ "$start" = 1 ]; then
        systemctl enable --now "$unit_name" >/dev/null 2>&1 || {
            systemctl status --no-pager "$unit_name" >&2 || true
            die "cannot start $unit_name (journalctl -u $unit_name)"
        }
        say "sysvisor-fs daemon enabled and running ($unit_name)"
        if [ "$fs_changed" = 1 ] && systemctl is-active -q "$unit_name"; then
            say "note: a new sysvisor-fs binary was installed; \`systemctl restart $unit_name\` runs it"
            say "      (system containers running then need a restart to get their views back)"
        fi
    else
        say "not started (--no-start): systemctl enable --now $unit_name"
    fi
else
    if fs_daemon_answers; then
        say "a sysvisor-fs daemon already runs (pid $(pidof sysvisor-fs))"
    else
        say "systemd does not run this host: start the daemon yourself, e.g."
        say "    $bindir/sysvisor-fs serve >/var/log/sysvisor-fs.log 2>&1 &"
        say "(system containers fail to start, with a clear error, while it is not running)"
    fi
fi
say "done: docker run --runtime=$runtime_name ..."
