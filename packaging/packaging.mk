# packaging.mk — the Debian package, man pages, shell completion and the
# Prometheus rule check. The Makefile includes it after its first target
# (`include packaging/packaging.mk` below `all: build`, so `all` stays the
# default), its deps target depends on packaging-deps and its test target on
# alerts-check; it uses the Makefile's GO, VERSION and LDFLAGS:
#
#   make deb                  bin/ldapgate_<version>_<arch>.deb
#   make man completion       bin/deb/man/*.1.gz, bin/deb/completion/
#   make alerts-check         promtool check rules packaging/prometheus/alerts.yml
#   make packaging-deps       promtool, man, and nfpm compiled once (as root)
#
# DEB_DIR moves every output (the packaging tests build into a temporary
# folder so they never touch bin/).

# Standalone (make -f packaging/packaging.mk deb): what the Makefile defines.
ifeq ($(filter Makefile,$(MAKEFILE_LIST)),)
export PATH := $(PATH):/usr/local/go/bin
GO      := go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
endif

NFPM_VERSION ?= v2.48.0
NFPM         := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
DEB_DIR      ?= bin
DEB_STAGE    := $(DEB_DIR)/deb
DEB_ARCH     ?= $(shell $(GO) env GOARCH)
# A Debian version must start with a digit and has no revision here:
# v1.2.0-3-gabc -> 1.2.0+3+gabc; an untagged abc123 -> 0~gitabc123.
deb_upstream := $(subst -,+,$(patsubst v%,%,$(VERSION)))
DEB_VERSION  ?= $(if $(filter 0% 1% 2% 3% 4% 5% 6% 7% 8% 9%,$(deb_upstream)),$(deb_upstream),0~git$(deb_upstream))
DEB_FILE     := $(DEB_DIR)/ldapgate_$(DEB_VERSION)_$(DEB_ARCH).deb

# The one build of the shipped binary: static (no libc dependency), paths
# trimmed, symbols stripped, the version stamped. The Dockerfile runs the
# same command.
SHIP_BUILD = CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)'

.PHONY: deb man completion ship-binary alerts-check packaging-deps

ship-binary:
	@mkdir -p $(DEB_STAGE)
	$(SHIP_BUILD) -o $(DEB_STAGE)/ldapgate ./cmd/ldapgate

# Generated from the command line's definitions by the binary itself.
man: ship-binary
	rm -rf $(DEB_STAGE)/man
	$(DEB_STAGE)/ldapgate gendocs --man-dir $(DEB_STAGE)/man
	gzip -9nf $(DEB_STAGE)/man/*.1

completion: ship-binary
	rm -rf $(DEB_STAGE)/completion
	$(DEB_STAGE)/ldapgate gendocs --completion-dir $(DEB_STAGE)/completion

deb: man completion
	rm -f $(DEB_DIR)/ldapgate_*.deb
	DEB_STAGE='$(DEB_STAGE)' DEB_ARCH='$(DEB_ARCH)' DEB_VERSION='$(DEB_VERSION)' \
	  $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(DEB_FILE)
	@echo "built $(DEB_FILE)"

alerts-check:
	promtool check rules packaging/prometheus/alerts.yml

# promtool (Debian's prometheus package, whose server is left stopped and
# disabled: only the tool is wanted), man for the package test, and nfpm
# downloaded and compiled once so that `make deb` in the tests is quick.
packaging-deps:
	@need=""; \
	command -v promtool >/dev/null 2>&1 || need="$$need prometheus"; \
	command -v man >/dev/null 2>&1 || need="$$need man-db"; \
	if [ -n "$$need" ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq || exit 1; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need || exit 1; \
	  if [ -d /run/systemd/system ]; then \
	    systemctl disable --now prometheus.service >/dev/null 2>&1 || true; \
	  else \
	    systemctl disable prometheus.service >/dev/null 2>&1 || true; \
	    service prometheus stop >/dev/null 2>&1 || true; \
	  fi; \
	fi
	@$(NFPM) --version >/dev/null
