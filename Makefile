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

.PHONY: all prereqs install install-ext install-cli unit test demo bench clean

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

demo: install
	pgkeeper demo $(DEMO_ARGS)

bench: install
	cargo run -q -p keeper-bench $(PROFILE_FLAG) -- $(BENCH_ARGS)

clean:
	cargo clean
