# pbxwall — build, test, demo. `make test` is what CI (.ci/run) runs.
#
# Root is needed for the packet tests (network namespaces); without root they say
# "SKIPPED ... needs root" and are counted as skipped, never as passed.

CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=

# Debian packages the build and the tests need.
DEB_PACKAGES := libnftnl-dev libmnl-dev pkg-config nftables dnsmasq-base iproute2 python3
# ... and the man page tests (rendering with groff).
DEB_PACKAGES += groff-base

.PHONY: all build deps lint test demo clean

all: build

## deps: install the Debian packages a fresh Debian 12 lacks (as root; no-op when present)
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -ne 0 ]; then echo "missing Debian packages:$$missing (run make deps as root)"; exit 1; fi; \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(CARGO) build --release --locked

## lint: formatting and clippy, warnings are errors
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## test: lint, unit tests, then the root integration tests in network namespaces
test: lint
	$(CARGO) test --locked --all-targets

## test-long: the torture tests at full length (PBXWALL_LONG_TESTS=1: 200 restart/ipchecker
##            rounds, 300 kill -9 rounds, 8 writers x 60 operations, 140000 hostile inputs;
##            root; about 10 minutes), then make fuzz. PBXWALL_TORTURE_SEED=N changes the seed.
.PHONY: test-long fuzz
test-long: deps
	PBXWALL_LONG_TESTS=1 $(CARGO) test --locked --test torture --test bad_input_kernel -- --nocapture
	$(MAKE) --no-print-directory fuzz

## fuzz: every cargo-fuzz target of fuzz/ for FUZZ_SECONDS (default 60) each; installs
##       cargo-fuzz if missing; RUSTC_BOOTSTRAP=1 lets the stable toolchain take its flags
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= parse_account parse_settings parse_profile parse_source fqdn parse_services cron_schedule
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## demo: add accounts, restart, show the table and probe it, in a throwaway namespace
demo: build
	./scripts/demo.sh target/release

clean:
	$(CARGO) clean

# ---------------------------------------------------------------------------------------
# Man pages and shell completions, generated from the clap definitions (src/manpages.rs).

COMPLETIONS_DIR ?= target/completions

.PHONY: man completions

## man: regenerate the generated man pages (and pbxwall(8)'s generated blocks) from src/cli.rs
man:
	PBXWALL_UPDATE_MAN=1 $(CARGO) test --locked --test man_pages

## completions: bash, zsh and fish completions of every binary, in $(COMPLETIONS_DIR)
completions: $(COMPLETIONS_DIR)/.stamp

$(COMPLETIONS_DIR)/.stamp: Cargo.toml Cargo.lock $(wildcard src/*.rs src/*/*.rs bin/*.rs)
	PBXWALL_COMPLETIONS_DIR="$(abspath $(COMPLETIONS_DIR))" $(CARGO) test --locked --test man_pages -- completions_for_every_binary
