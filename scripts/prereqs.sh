#!/usr/bin/env bash
# Installs what building and testing pg_keeper needs, only what is missing, on Debian 12.
# Idempotent: a second run does nothing but check.
set -euo pipefail
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=0.18.0
export PATH="$HOME/.cargo/bin:$PATH"

say() { echo "[prereqs] $*" >&2; }

# libpq-dev: pg_keeper and pgkeeper connect with libpq (crates/pq); openssl: the TLS tests make
# their certificates with it.
# haproxy, python3-prometheus-client: the HTTP endpoint tests (a real load balancer, a real
# Prometheus parser).
pkgs=(postgresql-15 postgresql-server-dev-15 libpq-dev openssl libclang-dev clang pkg-config nftables iproute2 procps haproxy python3-prometheus-client)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]}"
        say "run as root: apt-get install ${missing[*]}"
        exit 1
    fi
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    say "cargo not found: install a Rust toolchain (rustup) first"
    exit 1
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    say "installing cargo-pgrx $PGRX_VERSION (takes about 5 minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
# pgrx-pg-sys's build checks every pg_config registered: one that is gone (a PostgreSQL 16 or
# 18 of scripts/pg-version.sh in a clone since removed) fails every build. Drop those.
cfg=$PGRX_HOME/config.toml
if [ -f "$cfg" ]; then
    while IFS= read -r line; do
        if [[ $line =~ ^pg[0-9]+\ =\ \"(.*)\"$ ]] && [ ! -x "${BASH_REMATCH[1]}" ]; then
            say "dropping from $cfg: $line (no such pg_config)"
            grep -vxF -- "$line" "$cfg" > "$cfg.tmp" || true
            mv "$cfg.tmp" "$cfg"
        fi
    done < <(cat "$cfg"; echo)
fi
if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "$PGRX_HOME/config.toml"; then
    say "registering $PG_CONFIG with cargo-pgrx"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi
say "ok"
