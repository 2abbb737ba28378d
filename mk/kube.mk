# A real Kubernetes API server for the manifest test (deploy/kubernetes,
# docs/kubernetes.md): kube-apiserver and a single-member etcd, built from
# the Go module proxy by the modules in tools/kube and tools/etcd (their own
# modules: Kubernetes and etcd never enter meshid's go.mod). kube-apiserver
# takes minutes to build, so both binaries are kept in .tools/bin, named by
# version: they are built once per machine, not once per checkout.
# Measured with a cold module and build cache on a shared 2-core machine
# (load 20-30): kube-apiserver 81 min wall, 22.5 CPU-minutes (about 11-12
# minutes on 2 idle cores); etcd 12.5 min wall, 1.8 CPU-minutes.
KUBE_VERSION   := v1.37.2
ETCD_VERSION   := v3.7.3
KUBE_APISERVER := $(TOOLS)/bin/kube-apiserver-$(KUBE_VERSION)
KUBE_ETCD      := $(TOOLS)/bin/etcd-$(ETCD_VERSION)

# The version the API server reports (/version, compatibility checks);
# without it a build from the module proxy says v0.0.0.
KUBE_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37

EXTRA_TOOLS += $(KUBE_APISERVER) $(KUBE_ETCD)
RUN_ENV     += MESHID_KUBE_APISERVER=$(KUBE_APISERVER) MESHID_ETCD=$(KUBE_ETCD)

.PHONY: kube-tools
kube-tools: $(KUBE_APISERVER) $(KUBE_ETCD)

# Built to a temporary name and moved, so that an interrupted build never
# leaves a binary that make would take for finished.
$(KUBE_APISERVER):
	@echo "building kube-apiserver $(KUBE_VERSION) into $(TOOLS)/bin (several minutes the first time)"
	@mkdir -p $(TOOLS)/bin
	cd tools/kube && $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $@.tmp k8s.io/kubernetes/cmd/kube-apiserver
	mv $@.tmp $@

$(KUBE_ETCD):
	@echo "building etcd $(ETCD_VERSION) (embed) into $(TOOLS)/bin"
	@mkdir -p $(TOOLS)/bin
	cd tools/etcd && $(GO) build -trimpath -ldflags '-s -w' -o $@.tmp .
	mv $@.tmp $@
