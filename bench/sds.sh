#!/usr/bin/env bash
# SDS rotation fan-out: 1,000 SDS streams over meshid's real Unix socket,
# time from an SVID's re-issue to the last stream receiving it. See README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
go run ./bench/sdsfanout -streams "${STREAMS:-1000}" -stuck "${STUCK:-20}" -rounds "${ROUNDS:-5}"
