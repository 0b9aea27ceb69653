#!/usr/bin/env bash
# deno task demo [--cars N] [--duration S] [--rate EVENTS_PER_S]: the connected-car demo on a fresh
# machine. Sets up Deno and npm packages, starts Mosquitto and Kafka (scripts/services.sh up, which
# installs them on first use), then runs scripts/demo.ts. The brokers are left running afterwards
# (scripts/services.sh down stops them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_deno.sh
bash scripts/services.sh up
"$DENO" run --allow-all scripts/demo.ts "$@"
