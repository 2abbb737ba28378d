# make dist: release binaries in dist/ — meshid for linux/amd64 and
# linux/arm64, static (CGO_ENABLED=0: no libc to match, so they run FROM
# scratch and on any distribution), stamped with VERSION and COMMIT (the
# Makefile's: git describe), stripped (-s -w) and built with -trimpath (no
# build machine paths inside); SHA256SUMS in sha256sum's format, and
# VERSION. Names carry no version, so scripts and Dockerfiles can say
# dist/meshid-linux-$ARCH; the version is in dist/VERSION and in the binary.
#
# make dist-check builds them and runs test/dist on them (static ELF of the
# right machine, sums, the version each prints) plus a `go install
# ...@VERSION` from a file:// module proxy. .ci/run calls it; make test
# does not: on a fresh cache it compiles everything for two more targets.
DIST        := $(CURDIR)/dist
DIST_ARCHES := amd64 arm64

.PHONY: dist dist-check

dist:
	rm -rf $(DIST)
	mkdir -p $(DIST)
	@set -e; for arch in $(DIST_ARCHES); do \
		echo "building $(DIST)/meshid-linux-$$arch ($(VERSION))"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath \
			-ldflags "-s -w $(VERSION_LDFLAGS)" -o $(DIST)/meshid-linux-$$arch ./cmd/meshid; \
	done
	cd $(DIST) && sha256sum meshid-linux-* > SHA256SUMS
	echo $(VERSION) > $(DIST)/VERSION
	@cat $(DIST)/SHA256SUMS

dist-check: dist
	$(GO) vet -tags dist ./test/dist/
	DIST_DIR=$(DIST) DIST_VERSION=$(VERSION) DIST_COMMIT=$(COMMIT) $(GO) test -tags dist -count=1 -v -timeout 15m ./test/dist/
