# ldapgate — build, test, demo, benchmark.
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin/ldapgate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

# Packages whose code is concurrent run under the race detector; the others
# (PLAIN_PKGS: the e2e suite, the schema, the commands...) run without it.
# Each package's tests run once: run plainly too, the race packages took
# the two cores from the e2e suite, the longest part of `make test`. Its
# t.Parallel tests mostly wait (graces, Axigen's slow answers): four at once.
RACE_PKGS := ./gateway/... ./internal/... ./store/... ./cluster/... ./admin/... ./integration/axigen/... ./integration/axigensim/...
RACE_RE   := /(gateway|internal|store|cluster|admin|integration/axigen|integration/axigensim)(/|$$)

.PHONY: all build test test-unit test-e2e demo bench soak fmt vet deps clean

all: build

include packaging/packaging.mk

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ldapgate

# Samba's AD domain controller, for the Active Directory tests and `make demo AD=1`
# (internal/testenv/samba); installed without recommends (winbind, krb5 are not needed).
SAMBA_PKGS := samba samba-dsdb-modules samba-ad-provision samba-vfs-modules

# deps installs what the tests and the demo need on a Debian machine (as root).
deps: packaging-deps
	@command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need="$$need slapd"; \
	command -v ldapsearch >/dev/null 2>&1 || need="$$need ldap-utils"; \
	for p in $(SAMBA_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || samba_need="$$samba_need $$p"; \
	done; \
	if [ -n "$$need$$samba_need" ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq || exit 1; \
	fi; \
	if [ -n "$$need" ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need || exit 1; \
	fi; \
	if [ -n "$$samba_need" ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$samba_need || exit 1; \
	fi; \
	if command -v service >/dev/null 2>&1; then service slapd stop >/dev/null 2>&1 || true; fi

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# test installs what it needs first (idempotently), so `make test` works alone
# on a fresh Debian machine as root.
test: deps build vet alerts-check
	$(GO) test -count=1 -parallel 4 -timeout 20m $$($(GO) list ./... | grep -Ev '$(RACE_RE)')
	$(GO) test -count=1 -race -timeout 10m $(RACE_PKGS)
	$(GO) test -run '^$$' -fuzz '^FuzzMessageReader$$' -fuzztime 100000x ./internal/ldapwire
	$(GO) test -run '^$$' -fuzz '^FuzzMessageDecoders$$' -fuzztime 100000x ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzCanonicalDN$$' -fuzztime 100000x ./schema
	$(GO) test -run '^$$' -fuzz '^FuzzRecordDecode$$' -fuzztime 20000x ./cluster/raftlog

# make demo AD=1 runs it against a Samba AD domain controller instead of slapd.
demo: deps build
	./$(BIN) demo $(if $(AD),--ad)

bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./store/... ./schema/... ./integration/axigen/... ./cluster/
	$(GO) run ./bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench MirrorModify -benchtime 1x -timeout 10m ./e2e/

soak: deps build
	LDAPGATE_CRASH_ROUNDS=$${ROUNDS:-200} $(GO) test -count=1 -timeout 60m -run Crash ./store/... ./cluster/... ./e2e/...
	LDAPGATE_FINISH_ROUNDS=$${ROUNDS:-2000} $(GO) test -count=1 -timeout 30m -run TestRelayInterceptedWriteFinishes ./e2e/
	LDAPGATE_MSGID_ROUNDS=$${ROUNDS:-3000} $(GO) test -count=1 -timeout 30m -run TestRelayMessageIDReuseAfterAbandonGainsNoIdentity ./e2e/
	LDAPGATE_CLUSTER_ROUNDS=$${CLUSTER_ROUNDS:-100} $(GO) test -count=1 -v -timeout 10h -run '^TestCluster' ./e2e/
	$(GO) test -run '^$$' -fuzz '^FuzzMessageReader$$' -fuzztime $${FUZZTIME:-5m} ./internal/ldapwire
	$(GO) test -run '^$$' -fuzz '^FuzzMessageDecoders$$' -fuzztime $${FUZZTIME:-5m} ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzCanonicalDN$$' -fuzztime $${FUZZTIME:-5m} ./schema
	$(GO) test -run '^$$' -fuzz '^FuzzRecordDecode$$' -fuzztime $${FUZZTIME:-5m} ./cluster/raftlog

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
