# The start of every maintainer script of the sysvisor package (scripts/build-deb.sh puts
# it, then scripts/lib/host-setup.sh, before each script's own part).
set -e
sv_prog=sysvisor
runtime_name=sysvisor-runc
runtime_path=/usr/bin/sysvisor-runc
fs_path=/usr/bin/sysvisor-fs
docker_config=/etc/docker/daemon.json
subuid=/etc/subuid
subgid=/etc/subgid
pool_count=67108864 # 1024 ranges of 65536 ids, as scripts/install.sh
unit_name=sysvisor-fs.service
live=1
# What the package added to the host, so that remove and purge take back exactly that:
# "subids" (the lines added, "FILE<TAB>LINE"), "docker-runtime" (the runtime entry's path
# before the package set it, empty when there was no entry), "created-dirs" (the state
# directories absent before the first install).
records=/var/lib/sysvisor/package
# The directories Sysvisor's programs create at run time: the id range and registry state,
# the FUSE mount point, the sockets, the runc-path setting.
state_dirs="/var/lib/sysvisor /var/lib/sysvisor-fs /run/sysvisor /etc/sysvisor"
say() { echo "sysvisor: $*"; }

# The sysvisor-fs processes of this package (running /usr/bin/sysvisor-fs, or its old binary
# that an upgrade replaced).
package_daemon_pids() {
    local pid exe
    for pid in $(pidof sysvisor-fs 2>/dev/null || true); do
        exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
        case "$exe" in "$fs_path"|"$fs_path (deleted)") echo "$pid" ;; esac
    done
}
