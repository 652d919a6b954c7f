# Shell functions shared by scripts/install.sh (sourced from the tree) and the Debian
# package's maintainer scripts (scripts/build-deb.sh copies this file into them, since
# postrm runs after the package's files are gone). They edit the host's configuration for
# Sysvisor: Docker's daemon.json (the runtime entry) and /etc/subuid, /etc/subgid (the id
# pool of system containers), and reload dockerd. Both editors need python3.
#
# The caller sets: sv_prog (the name in messages), runtime_name, docker_config, live (1:
# act on the running system, 0: only edit files), and defines say (a message on stdout).
# shellcheck shell=bash

# The Python both editors start with: write(PATH, TEXT) replaces a file atomically (temp
# file, fsync, rename), keeping its mode (0644 for a new one).
sv_py_write='
import os, tempfile

def write(path, text):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
'

# edit_daemon_json add|remove|check|path PATH FILE: merges (or removes) the runtime entry;
# prints "changed" or "unchanged" ("path": the entry's path, empty when there is none).
# Other keys, and other fields of the entry, are kept. Fails, changing nothing, on a file
# that is not a JSON object ("check" only checks that).
edit_daemon_json() {
    { echo "$sv_py_write"; cat <<'PY'; } | python3 - "$sv_prog" "$1" "$runtime_name" "$2" "$3"
import json, sys
prog, action, name, path, file = sys.argv[1:6]
exists = os.path.exists(file)
text = open(file).read() if exists else ""
if text.strip():
    try:
        config = json.loads(text)
    except ValueError as e:
        sys.exit(f"{prog}: error: {file} is not valid JSON ({e}); fix it first, nothing was changed")
else:
    config = {}
if not isinstance(config, dict):
    sys.exit(f"{prog}: error: {file} does not hold a JSON object; nothing was changed")
runtimes = config.get("runtimes", {})
if not isinstance(runtimes, dict):
    sys.exit(f"{prog}: error: \"runtimes\" in {file} is not an object; nothing was changed")
if action == "check":
    sys.exit(0)
if action == "path":
    entry = runtimes.get(name)
    print(entry.get("path", "") if isinstance(entry, dict) else "")
    sys.exit(0)
if action == "add":
    entry = runtimes.get(name)
    entry = dict(entry) if isinstance(entry, dict) else {}
    entry["path"] = path
    runtimes[name] = entry
    config["runtimes"] = runtimes
else:
    if name not in runtimes:
        print("unchanged")
        sys.exit(0)
    del runtimes[name]
    if runtimes or os.environ.get("SYSVISOR_DOCKERD_RUNS") == "1":
        # A running dockerd drops a runtime on reload only when "runtimes" is present.
        config["runtimes"] = runtimes
    else:
        config.pop("runtimes", None)
new = json.dumps(config, indent=4) + "\n"
if exists and text.strip() and json.loads(text) == config:
    print("unchanged")
    sys.exit(0)
if action == "remove" and not config:
    os.unlink(file)  # an empty daemon.json says nothing: leave none
    print("changed")
    sys.exit(0)
write(file, new)
print("changed")
PY
}

# edit_subids add|remove|remove-line ARG SUBUID SUBGID: "add COUNT" adds
# "sysvisor:BASE:COUNT" to each file that lacks a sysvisor entry (BASE: 65536-aligned,
# >= 100000, after the end of every entry of both files, the same in both when both are
# added) and prints "added LINE to FILE" for each; "remove ANY" removes every sysvisor line;
# "remove-line LINE" removes the lines equal to LINE only (what a package added). The last
# line printed is "changed" or "unchanged".
edit_subids() {
    { echo "$sv_py_write"; cat <<'PY'; } | python3 - "$sv_prog" "$@"
import sys
prog, action, arg, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:6]
USER, ALIGN, MIN_BASE = "sysvisor", 65536, 100000
texts = [open(f).read() if os.path.exists(f) else "" for f in files]

def entries(text):
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and not line.lstrip().startswith("#"):
            try:
                yield parts[0], int(parts[1]), int(parts[2])
            except ValueError:
                pass

changed = False
if action == "add":
    count = int(arg)
    missing = [i for i, t in enumerate(texts) if not any(u == USER for u, _, _ in entries(t))]
    end = max([MIN_BASE] + [s + c for t in texts for _, s, c in entries(t)])
    base = -(-end // ALIGN) * ALIGN
    if base + count > 2**32:
        sys.exit(f"{prog}: error: no room for {count} ids after the existing entries of {files[0]} and {files[1]}")
    for i in missing:
        text = texts[i]
        if text and not text.endswith("\n"):
            text += "\n"
        write(files[i], text + f"{USER}:{base}:{count}\n")
        print(f"added {USER}:{base}:{count} to {files[i]}")
        changed = True
else:
    def unwanted(line):
        if action == "remove-line":
            return line.strip() == arg
        return line.split(":")[0].strip() == USER
    for f, text in zip(files, texts):
        kept = [l for l in text.splitlines(keepends=True) if not unwanted(l)]
        if "".join(kept) != text:
            write(f, "".join(kept))
            print(f"removed the {USER} entry from {f}")
            changed = True
print("changed" if changed else "unchanged")
PY
}

# PIDs of the dockerd processes that read $docker_config (default config or named).
dockerd_pids() {
    local pid args
    for pid in $(pidof dockerd 2>/dev/null || true); do
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        case "$args" in
            *--config-file=*|*"--config-file "*)
                case "$args" in *"--config-file=$docker_config"*|*"--config-file $docker_config"*) echo "$pid" ;; esac ;;
            *) [ "$docker_config" = /etc/docker/daemon.json ] && echo "$pid" ;;
        esac
    done
}

# reload_dockerd [1|0]: SIGHUP to the dockerd processes that read $docker_config, then
# waits (5 s at most) until `docker info` lists the runtime (1, the default) or not (0).
reload_dockerd() {
    [ "$live" = 1 ] || return 0
    local pids
    pids="$(dockerd_pids)"
    if [ -z "$pids" ]; then
        say "dockerd is not running: it reads $docker_config when it starts"
        return 0
    fi
    for pid in $pids; do
        kill -HUP "$pid" && say "reloaded dockerd (pid $pid, SIGHUP)"
    done
    # Check the result through the default socket, when a daemon answers there.
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || return 0
    local want=${1:-1} has i
    for i in $(seq 50); do
        has=0
        case "$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)" in *"\"$runtime_name\""*) has=1 ;; esac
        if [ "$has" = "$want" ]; then
            [ "$want" = 1 ] && say "docker lists the runtime: docker run --runtime=$runtime_name ..."
            return 0
        fi
        sleep 0.1
    done
    say "warning: docker info does not show the change yet (check dockerd's log)"
}


systemd_runs() { [ "$live" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# unit_for_bindir BINDIR UNIT: the unit file UNIT with its ExecStart in BINDIR (the unit in
# packaging/ names /usr/local/bin).
unit_for_bindir() { sed "s#/usr/local/bin/#$1/#g" "$2"; }
