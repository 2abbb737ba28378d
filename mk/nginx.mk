# nginx, a real bundle service for the tests of authz.bundles
# (docs/authz.md): test/harness's StartBundleServer runs it in the
# foreground with a configuration of its own, serving the bundles a test
# writes. Debian's nginx-light is enough: static files, ETag and
# If-None-Match, TLS, and `if` on a request header for the bearer token.
NGINX       := /usr/sbin/nginx
NGINX_STAMP := $(TOOLS)/.nginx

EXTRA_TOOLS += $(NGINX_STAMP)
RUN_ENV     += MESHID_NGINX=$(NGINX)

# Debian's package, as root with no questions; only when it is missing.
# The package's own service is not started: there is no init system on the
# test machines, and the tests start theirs.
$(NGINX_STAMP):
	@if [ -x $(NGINX) ]; then \
		echo "nginx is installed"; \
	else \
		echo "installing nginx-light (apt-get)"; \
		CI=true DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light </dev/null; \
	fi
	$(NGINX) -v
	@mkdir -p $(TOOLS) && touch $@
