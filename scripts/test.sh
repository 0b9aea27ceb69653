#!/usr/bin/env bash
# scripts/test.sh [deno test options...] — the body of `deno task test`.
#
#   1-2. scripts/ensure_deno.sh: finds Deno (on PATH, else .tools/node_modules/.bin/deno, else installs
#      deno@2.9.6 from npm into .tools) and runs `deno install` (npm packages, no lifecycle scripts),
#   3. `scripts/services.sh up`: Mosquitto and Kafka on 127.0.0.1 (installed/downloaded on first use),
#   4. `deno test --allow-all tests/ "$@"`, and exits with its code.
#
# Extra arguments go to `deno test`, e.g. `deno task test --filter Batcher`; when one of them is an existing
# path (`deno task test tests/codecs`), only what they name runs instead of all of tests/.
# The brokers are LEFT RUNNING afterwards (the next run starts in a fraction of a second); stop them with
# `scripts/services.sh down`, or set EDGEINFER_TEST_SERVICES_DOWN=1 to stop them when the tests end.
# The tests find the brokers through EDGEINFER_KAFKA_BROKERS and EDGEINFER_MQTT_URL, set here from the same
# EDGEINFER_KAFKA_PORT / EDGEINFER_MQTT_PORT that services.sh uses (unless already set).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf 'test.sh: %s\n' "$*" >&2; }

source scripts/ensure_deno.sh
say "using $deno_version ($DENO)"

bash scripts/services.sh up

: "${EDGEINFER_KAFKA_BROKERS:=127.0.0.1:${EDGEINFER_KAFKA_PORT:-9092}}"
: "${EDGEINFER_MQTT_URL:=mqtt://127.0.0.1:${EDGEINFER_MQTT_PORT:-1883}}"
export EDGEINFER_KAFKA_BROKERS EDGEINFER_MQTT_URL

# `deno task test tests/codecs` runs only that part: tests/ is added only when no argument names a path.
paths=(tests/)
for arg in "$@"; do
  if [[ $arg != -* && -e $arg ]]; then
    paths=()
    break
  fi
done

rc=0
"$DENO" test --allow-all "${paths[@]}" "$@" || rc=$?

if [[ ${EDGEINFER_TEST_SERVICES_DOWN:-0} == 1 ]]; then
  bash scripts/services.sh down
else
  say "Mosquitto and Kafka are left running (scripts/services.sh status | down)"
fi
exit "$rc"
