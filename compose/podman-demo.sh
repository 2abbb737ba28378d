#!/usr/bin/env bash
# Runs the compose mesh under Podman as `make compose-demo` does: Podman's
# Engine API service on a socket of its own (meshid reads container labels
# from it), podman-compose up, one request of each kind through the mesh,
# then everything torn down again. KEEP=1 leaves the mesh running (stop it
# with the command it prints).
#
# Needs: podman, podman-compose (1.1 or later: `pid: host`), the images
# MESHID_IMAGE, DEMOAPP_IMAGE and ENVOY_IMAGE (`make image` builds the first
# two). CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, when set, are honoured.
set -euo pipefail
cd "$(dirname "$0")"

: "${PODMAN_COMPOSE:=podman-compose}"
: "${PROJECT:=meshid-demo}"
: "${WEB_PORT:=8080}" "${MESHID_ADMIN_PORT:=8089}"
run_dir=$(mktemp -d /tmp/meshid-compose-demo.XXXXXX)
export ENGINE_SOCKET=$run_dir/podman.sock WEB_PORT MESHID_ADMIN_PORT
export MESHID_IMAGE DEMOAPP_IMAGE ENVOY_IMAGE

podman system service --time=0 "unix://$ENGINE_SOCKET" &
service=$!
down() {
	"$PODMAN_COMPOSE" -p "$PROJECT" down -v -t 2 >/dev/null 2>&1 || true
	kill "$service" 2>/dev/null || true
	wait "$service" 2>/dev/null || true
	rm -rf "$run_dir"
}
if [ "${KEEP:-}" != 1 ]; then trap down EXIT; fi
for _ in $(seq 100); do [ -S "$ENGINE_SOCKET" ] && break; sleep 0.1; done

echo "== podman-compose up (project $PROJECT, engine API $ENGINE_SOCKET)"
"$PODMAN_COMPOSE" -p "$PROJECT" up -d --no-build >/dev/null
web=http://127.0.0.1:$WEB_PORT/call
# Up when web reaches db through api: every sidecar has its certificate
# and has resolved its upstreams by name.
for _ in $(seq 300); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' "$web/api/call/db/rows")" = 200 ] && break
	sleep 0.2
done
podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '   {{.Names}}  {{.Status}}'
for path in api/hello api/call/db/rows db/hello; do
	echo "== curl $web/$path"
	curl -s -w '   -> HTTP %{http_code}\n' "$web/$path"
done
echo "== meshid: http://127.0.0.1:$MESHID_ADMIN_PORT/metrics"
curl -s "http://127.0.0.1:$MESHID_ADMIN_PORT/metrics" | grep -E '^meshid_(sds_streams|authz_decisions_total)' | sed 's/^/   /'
if [ "${KEEP:-}" = 1 ]; then
	echo "== left running; stop it with:"
	echo "   $PODMAN_COMPOSE -f $PWD/docker-compose.yaml -p $PROJECT down -v; kill $service"
fi
