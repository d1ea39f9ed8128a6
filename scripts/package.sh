#!/usr/bin/env bash
# make package: what an operator installs.
#   - PostgreSQL 15 (Debian): target/package/postgresql-15-pg-keeper_<version>_amd64.deb with the
#     extension (pg_keeper.so, pg_keeper.control, pg_keeper--<version>.sql) in Debian's
#     PostgreSQL 15 directories and the pgkeeper CLI in /usr/bin.
#   - PostgreSQL 16 and 18 (the PyPI wheels of scripts/pg-version.sh): one tarball each,
#     target/package/pg-keeper-<version>-pg<N>.tar.gz, its files laid out under that
#     version's pg_config directories (pgkeeper beside postgres, in --bindir).
# PACKAGE_PROFILE=dev builds unoptimised (the CI's package test, which reuses the test build).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
profile=${PACKAGE_PROFILE:-release}
versions=${PACKAGE_VERSIONS:-15 16 18}
out=$root/target/package
say() { echo "[package] $*" >&2; }
if [ "$profile" = release ]; then pgrx_flag=(); cargo_flag=(--release); bin=target/release; else pgrx_flag=(--debug); cargo_flag=(); bin=target/debug; fi
mkdir -p "$out"
cargo build -q -p pgkeeper-cli "${cargo_flag[@]}"
for v in $versions; do
    if [ "$v" = 15 ]; then pgc=/usr/lib/postgresql/15/bin/pg_config; else pgc=$(scripts/pg-version.sh "$v"); fi
    stage=$out/stage-pg$v
    rm -rf "$stage"
    say "PostgreSQL $v: cargo pgrx package ($profile)"
    cargo pgrx package -p pg_keeper --pg-config "$pgc" --out-dir "$stage" "${pgrx_flag[@]}" >/dev/null
    if [ "$v" = 15 ]; then
        name=postgresql-15-pg-keeper
        install -D -m 0755 "$bin/pgkeeper" "$stage/usr/bin/pgkeeper"
        mkdir -p "$stage/DEBIAN"
        size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
        cat > "$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $(dpkg --print-architecture)
Maintainer: pg_keeper developers <pg_keeper@localhost>
Installed-Size: $size
Depends: postgresql-15, libpq5, libssl3, libc6 (>= 2.34), libgcc-s1
Section: database
Priority: optional
Homepage: https://github.com/pg-keeper/pg_keeper
Description: simple, safe high availability for PostgreSQL 15
 pg_keeper runs as a background worker inside every server of a streaming
 replication cluster: monitoring, automatic failover by majority vote with a
 master lease and an in-backend commit gate, synchronous-to-asynchronous
 switching, switchover, rejoin, HTTP health checks and Prometheus metrics.
 Includes the pgkeeper command line.
CONTROL
        deb=$out/${name}_${version}_$(dpkg --print-architecture).deb
        dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
        say "$deb ($(du -h "$deb" | cut -f1))"
        echo "$deb"
    else
        install -D -m 0755 "$bin/pgkeeper" "$stage$("$pgc" --bindir)/pgkeeper"
        tgz=$out/pg-keeper-$version-pg$v.tar.gz
        tar -C "$stage" --owner=0 --group=0 -czf "$tgz" .
        say "$tgz ($(du -h "$tgz" | cut -f1))"
        echo "$tgz"
    fi
done
