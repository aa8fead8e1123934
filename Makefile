# pbxwall — build, test, demo. `make test` is what CI (.ci/run) runs.
#
# Root is needed for the packet tests (network namespaces). Without root (or ip/nft, or a
# program a test runs such as dnsmasq) the test runner of tests/common reports them as
# ignored, with a "SKIPPED <test>: <why>" line: counted as skipped by .ci/run, never as
# passed. PBXWALL_TESTS_REQUIRE_ROOT=1 (.ci/run sets it) makes them fail instead.

CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=

# Debian packages the build and the tests need.
DEB_PACKAGES := libnftnl-dev libmnl-dev pkg-config nftables dnsmasq-base iproute2 python3
# ... and the packaging tests (man page rendering, systemd-analyze verify of the units).
DEB_PACKAGES += groff-base systemd
# ... and promtool, which checks `status --prometheus` (tests/status.rs).
DEB_PACKAGES += prometheus
# ... and fish and zsh, which run their completions (tests/man_pages.rs; bash is always there).
DEB_PACKAGES += fish zsh
# ... and the real peers of the v2 layers: SIPp (SIP traffic), fail2ban (bans through
# pbxwall's action), knockd's `knock` client, minisign (signed bundles), ansible-core (fleets),
# openssl (the test CAs of tests/fleet.rs).
DEB_PACKAGES += sip-tester fail2ban knockd minisign ansible-core openssl

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
FUZZ_TARGETS ?= parse_account parse_settings parse_profile parse_source fqdn parse_services cron_schedule parse_bundle
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## demo: add accounts, restart, show the table and probe it, in a throwaway namespace
demo: build
	./scripts/demo.sh target/release

## bench: benchmarks in throwaway namespaces (root; about 5 minutes; not part of test):
##        restart vs nft -f vs one rule per address, per-packet cost, slow DNS, ipchecker,
##        peak memory. Prints tables with ratios; BENCHMARKS.md has method and results.
##        BENCH_ARGS="restart packets dns ipchecker --reps N" picks scenarios and rounds.
.PHONY: bench
bench:
	@if [ "$$(id -u)" -eq 0 ]; then $(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) time"; fi
	$(CARGO) bench --locked --bench bench -- $(BENCH_ARGS)

clean:
	$(CARGO) clean

# ---------------------------------------------------------------------------------------
# Installing and packaging (packaging/README.md explains the layout and the units).
#
#   make install                      build (release), then install under /usr/local
#                                     (binaries stripped; INSTALL_STRIP= keeps debug info)
#   make install PREFIX=/usr DESTDIR=/tmp/root BINDIR_SRC=target/debug
#                                     install binaries already built there, no build
#   make uninstall                    remove what install put there (not /etc/pbxwall)
#   make deb                          target/debian/pbxwall_VERSION-1_ARCH.deb (cargo-deb;
#                                     staged in target/deb-root, which Cargo.toml names)
#   make man                          regenerate man/*.8 from src/cli.rs
#   make completions                  bash, zsh, fish completions in target/completions
#   make test-slow                    install the .deb in a fresh Debian 12 root (root, minutes)

SBINDIR ?= $(PREFIX)/sbin
DATADIR ?= $(PREFIX)/share
PKGDATADIR ?= $(DATADIR)/pbxwall
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/pbxwall
UNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
SYSCONFDIR ?= /etc
CONFDIR ?= $(SYSCONFDIR)/pbxwall
STATEDIR ?= /var/lib/pbxwall
NFT ?= /usr/sbin/nft
# fail2ban's configuration folder: the action pbxwall.conf and the example jails go there.
FAIL2BANDIR ?= $(SYSCONFDIR)/fail2ban
INSTALL ?= install
# install's -s strips the binaries as they are copied: the release profile keeps debug info
# for profiling (about 70 MB a binary, 9 MB stripped). INSTALL_STRIP= installs them unstripped.
INSTALL_STRIP ?= -s
# Cargo profile of the binaries to install: release, or debug (cargo's dev profile).
PROFILE ?= release
CARGO_PROFILE = $(if $(filter debug,$(PROFILE)),dev,$(PROFILE))
# cargo's target folder (CARGO_TARGET_DIR when set)
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BINDIR_SRC ?= $(TARGET_DIR)/$(PROFILE)
COMPLETIONS_DIR ?= $(TARGET_DIR)/completions
CARGO_DEB_VERSION ?= 3.8.0

# Every [[bin]] in Cargo.toml: the one list of binaries.
BINARIES := $(shell awk '/^\[\[bin\]\]/ { b = 1; next } b && /^name *=/ { gsub(/^name *= *"|".*$$/, ""); print; b = 0 }' Cargo.toml)
UNITS := pbxwall.service pbxwall-restart.service pbxwall-ipchecker.service pbxwall-ipchecker.timer \
	pbxwall-sync.service pbxwall-sync.timer
PROFILES_SRC := $(wildcard profiles/*.toml)
PROVIDERS_SRC := $(wildcard providers.toml)

.PHONY: install install-build uninstall man completions deb test-slow

## man: regenerate the generated man pages (and pbxwall(8)'s generated blocks) from src/cli.rs
man:
	PBXWALL_UPDATE_MAN=1 $(CARGO) test --locked --test man_pages

## completions: bash, zsh and fish completions of every binary, in $(COMPLETIONS_DIR)
completions: $(COMPLETIONS_DIR)/.stamp

$(COMPLETIONS_DIR)/.stamp: Cargo.toml Cargo.lock $(wildcard src/*.rs src/*/*.rs bin/*.rs)
	PBXWALL_COMPLETIONS_DIR="$(abspath $(COMPLETIONS_DIR))" $(CARGO) test --locked --test man_pages -- completions_for_every_binary

# Build unless BINDIR_SRC was given on the command line (then its binaries are used as-is).
install-build:
ifneq ($(origin BINDIR_SRC),command line)
	$(CARGO) build --locked --profile $(CARGO_PROFILE) --bins
endif

## install: binaries, shipped data, man pages, README.md (in DOCDIR), completions, systemd
##          units, and (if absent) the commented-out /etc/pbxwall/pbxwall.toml with empty accounts/ and profiles/
install: install-build completions
	@for b in $(BINARIES); do test -x "$(BINDIR_SRC)/$$b" || { \
	  echo "$(BINDIR_SRC)/$$b is missing: build first (make build), or set BINDIR_SRC" >&2; exit 1; }; done
	$(INSTALL) -d "$(DESTDIR)$(SBINDIR)"
	$(INSTALL) -m 0755 $(INSTALL_STRIP) $(addprefix $(BINDIR_SRC)/,$(BINARIES)) "$(DESTDIR)$(SBINDIR)/"
	$(INSTALL) -d "$(DESTDIR)$(PKGDATADIR)/profiles"
	$(INSTALL) -m 0644 $(PROFILES_SRC) "$(DESTDIR)$(PKGDATADIR)/profiles/"
	$(if $(PROVIDERS_SRC),$(INSTALL) -m 0644 $(PROVIDERS_SRC) "$(DESTDIR)$(PKGDATADIR)/")
	$(INSTALL) -d "$(DESTDIR)$(MANDIR)/man8" "$(DESTDIR)$(MANDIR)/man5"
	$(INSTALL) -m 0644 $(wildcard man/*.8) "$(DESTDIR)$(MANDIR)/man8/"
	$(INSTALL) -m 0644 $(wildcard man/*.5) "$(DESTDIR)$(MANDIR)/man5/"
	$(INSTALL) -d "$(DESTDIR)$(DOCDIR)"
	$(INSTALL) -m 0644 README.md "$(DESTDIR)$(DOCDIR)/"
	$(INSTALL) -d "$(DESTDIR)$(BASHCOMPDIR)" "$(DESTDIR)$(ZSHCOMPDIR)" "$(DESTDIR)$(FISHCOMPDIR)"
	$(INSTALL) -m 0644 $(COMPLETIONS_DIR)/bash/* "$(DESTDIR)$(BASHCOMPDIR)/"
	$(INSTALL) -m 0644 $(COMPLETIONS_DIR)/zsh/* "$(DESTDIR)$(ZSHCOMPDIR)/"
	$(INSTALL) -m 0644 $(COMPLETIONS_DIR)/fish/* "$(DESTDIR)$(FISHCOMPDIR)/"
	$(INSTALL) -d "$(DESTDIR)$(UNITDIR)"
	@for u in $(UNITS); do \
	  echo "  unit $(DESTDIR)$(UNITDIR)/$$u"; \
	  sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@PKGDATADIR@|$(PKGDATADIR)|g' \
	      -e 's|@CONFDIR@|$(CONFDIR)|g' -e 's|@STATEDIR@|$(STATEDIR)|g' -e 's|@NFT@|$(NFT)|g' \
	      packaging/systemd/$$u.in > "$(DESTDIR)$(UNITDIR)/$$u" && chmod 0644 "$(DESTDIR)$(UNITDIR)/$$u" || exit 1; \
	done
	$(INSTALL) -d "$(DESTDIR)$(FAIL2BANDIR)/action.d" "$(DESTDIR)$(FAIL2BANDIR)/jail.d"
	sed -e 's|/usr/sbin/pbxwall|$(SBINDIR)/pbxwall|' packaging/fail2ban/action.d/pbxwall.conf \
	  > "$(DESTDIR)$(FAIL2BANDIR)/action.d/pbxwall.conf"
	chmod 0644 "$(DESTDIR)$(FAIL2BANDIR)/action.d/pbxwall.conf"
	$(INSTALL) -m 0644 packaging/fail2ban/jail.d/pbxwall.conf.example "$(DESTDIR)$(FAIL2BANDIR)/jail.d/"
	$(INSTALL) -d "$(DESTDIR)$(CONFDIR)/accounts" "$(DESTDIR)$(CONFDIR)/profiles"
	@if [ -e "$(DESTDIR)$(CONFDIR)/pbxwall.toml" ]; then \
	  echo "  kept $(DESTDIR)$(CONFDIR)/pbxwall.toml"; \
	else \
	  $(INSTALL) -m 0644 packaging/pbxwall.toml "$(DESTDIR)$(CONFDIR)/pbxwall.toml"; \
	fi
	@echo "installed under $(DESTDIR)$(PREFIX); see packaging/README.md for the systemd units"

# The first line of every cron file pbxwall writes (CRON_FILE_MARKER in src/cron.rs).
CRON_FILE ?= $(SYSCONFDIR)/cron.d/pbxwall
CRON_MARKER := \# pbxwall: re-resolve dynamic DNS names and update the firewall.
# ... and of the one `pbxwall sync --install-cron` writes (SYNC_CRON_FILE_MARKER).
SYNC_CRON_FILE ?= $(SYSCONFDIR)/cron.d/pbxwall-sync
SYNC_CRON_MARKER := \# pbxwall: pull the signed fleet bundle and apply it.

## uninstall: remove what install put under PREFIX, and the cron file of
##            `ipchecker --install-cron` (only if pbxwall wrote it: cron would call the removed
##            ipchecker); /etc/pbxwall and /var/lib/pbxwall stay
uninstall:
	@if [ -f "$(DESTDIR)$(CRON_FILE)" ] && [ "$$(head -n 1 "$(DESTDIR)$(CRON_FILE)")" = "$(CRON_MARKER)" ]; then \
	  echo "rm -f $(DESTDIR)$(CRON_FILE)"; rm -f "$(DESTDIR)$(CRON_FILE)"; \
	fi
	@if [ -f "$(DESTDIR)$(SYNC_CRON_FILE)" ] && [ "$$(head -n 1 "$(DESTDIR)$(SYNC_CRON_FILE)")" = "$(SYNC_CRON_MARKER)" ]; then \
	  echo "rm -f $(DESTDIR)$(SYNC_CRON_FILE)"; rm -f "$(DESTDIR)$(SYNC_CRON_FILE)"; \
	fi
	rm -f $(addprefix "$(DESTDIR)$(SBINDIR)"/,$(BINARIES))
	rm -rf "$(DESTDIR)$(PKGDATADIR)"
	rm -f $(addprefix "$(DESTDIR)$(MANDIR)"/man8/,$(notdir $(wildcard man/*.8)))
	rm -f $(addprefix "$(DESTDIR)$(MANDIR)"/man5/,$(notdir $(wildcard man/*.5)))
	rm -f "$(DESTDIR)$(DOCDIR)/README.md"
	rm -f "$(DESTDIR)$(FAIL2BANDIR)/action.d/pbxwall.conf" "$(DESTDIR)$(FAIL2BANDIR)/jail.d/pbxwall.conf.example"
	@# ... and the fail2ban folders install made, if nothing else is in them (no fail2ban)
	rmdir "$(DESTDIR)$(FAIL2BANDIR)/action.d" "$(DESTDIR)$(FAIL2BANDIR)/jail.d" "$(DESTDIR)$(FAIL2BANDIR)" 2>/dev/null || true
	rmdir "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true
	rm -f $(addprefix "$(DESTDIR)$(BASHCOMPDIR)"/,$(BINARIES))
	rm -f $(addprefix "$(DESTDIR)$(ZSHCOMPDIR)"/_,$(BINARIES))
	rm -f $(addsuffix .fish,$(addprefix "$(DESTDIR)$(FISHCOMPDIR)"/,$(BINARIES)))
	rm -f $(addprefix "$(DESTDIR)$(UNITDIR)"/,$(UNITS))
	@echo "left $(CONFDIR) and $(STATEDIR) in place (your accounts and state)"

## deb: build the Debian package with cargo-deb from a staged `make install PREFIX=/usr`
deb:
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION)
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="dpkg-dev"
	$(CARGO) build --locked --release --bins
	rm -rf target/deb-root
	$(MAKE) --no-print-directory install DESTDIR="$(abspath target/deb-root)" PREFIX=/usr \
	  BINDIR_SRC=$(TARGET_DIR)/release ZSHCOMPDIR=/usr/share/zsh/vendor-completions INSTALL_STRIP=-s
	$(CARGO) deb --no-build --no-strip
	@ls -1 $(TARGET_DIR)/debian/*.deb

## test-slow: build the .deb, install it into a fresh Debian 12 root (debootstrap) and run
##            it there (root; minutes, needs the Debian mirror apt uses). The test is ignored
##            unless PBXWALL_SLOW_TESTS=1; --include-ignored makes it fail, not be ignored,
##            when it cannot run (not root)
test-slow:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) debootstrap dpkg-dev"
	PBXWALL_SLOW_TESTS=1 $(CARGO) test --locked --test deb -- --include-ignored --nocapture
