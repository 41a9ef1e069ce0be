# Helpers shared by BandSync's scripts; `source "$(dirname "$0")/lib.sh"`.
# shellcheck shell=bash

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
script_name="$(basename "$0")"

say() { echo "$script_name: $*" >&2; }
die() { say "error: $*"; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }

# need TOOL HOW-TO-GET-IT
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found; $2"; }

# apt_install PACKAGE... (Debian/Ubuntu, as root; runs apt-get update once per script)
apt_updated=""
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found: install $* with your system's package manager"
    [[ "$(id -u)" == 0 ]] || die "installing $* needs root: run 'sudo apt-get update && sudo apt-get install -y $*' and try again"
    if [[ -z "$apt_updated" ]]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        apt_updated=1
    fi
    say "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null >&2
}

# The nats-server binary (installing it if missing); prints its path.
nats_server_path() {
    if [[ -n "${BANDSYNC_NATS_SERVER:-}" ]]; then
        [[ -x "$BANDSYNC_NATS_SERVER" ]] || die "BANDSYNC_NATS_SERVER=$BANDSYNC_NATS_SERVER is not an executable file"
        echo "$BANDSYNC_NATS_SERVER"
    else
        "$repo_root/scripts/install-nats-server"
    fi
}

# Use the persistent shared build cache unless the caller chose a target dir.
default_target_dir() {
    if [[ -z "${CARGO_TARGET_DIR:-}" ]] && mkdir -p /var/cache/bandsync/target 2>/dev/null \
        && [[ -w /var/cache/bandsync/target ]]; then
        export CARGO_TARGET_DIR=/var/cache/bandsync/target
    fi
}

# tcp_open HOST PORT: whether something accepts TCP connections there.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# cargo on PATH, or rustup's default location (CI shells may not source ~/.cargo/env).
need_cargo() {
    if ! command -v cargo >/dev/null && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    need cargo "install Rust with rustup (https://rustup.rs), then: rustup component add rustfmt clippy"
}
