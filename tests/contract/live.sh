#!/usr/bin/env bash
# live.sh (make contract-live): the contract both ways, against the gateway and the services of the
# running stack (deploy/stack.sh up first; the services are started here when they are not running,
# and only those are stopped at the end).
#   1. tests/contract/fuzz_kafka.py: commands generated from schemas/ (valid and mutated) produced to
#      the command topics; the C codec must agree with the schemas on every one.
#   2. schemathesis (pinned in requirements.txt, settings in schemathesis.toml) on schemas/openapi.yaml
#      against the gateway: every check (no 5xx; status, schema, content type and headers as the
#      document says; what it allows accepted, what it forbids a 4xx), stateful sequences by its links.
# Settings: VX_FUZZ_SEED [19] (both), VX_FUZZ_KAFKA_EXAMPLES [25] generated commands per type,
# VX_FUZZ_HTTP_EXAMPLES [10] examples per operation, VX_FUZZ_WAIT_S [90] wait for the answers.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
PY=$("$here/setup.sh")
seed=${VX_FUZZ_SEED:-19}
examples=${VX_FUZZ_HTTP_EXAMPLES:-10}
gateway=${GATEWAY_HTTP_ADDR:-127.0.0.1:8080}

started=()
for s in inventory-svc order-svc gateway; do
	deploy/stack.sh status | grep -q "^$s *running" || started+=("$s")
done
stop_started() {
	local s
	for s in "${started[@]}"; do deploy/stack.sh stop "$s" >/dev/null || true; done
}
trap stop_started EXIT
deploy/stack.sh services-up

t0=$(date +%s)
rc=0
"$PY" "$here/fuzz_kafka.py" selftest # the verdicts it compares the services with, and that it can fail
"$PY" "$here/fuzz_kafka.py" || rc=1
t1=$(date +%s)
"$(dirname "$PY")/schemathesis" --config-file "$here/schemathesis.toml" run schemas/openapi.yaml \
	--url "http://$gateway" --checks all --max-examples "$examples" --seed "$seed" \
	--exclude-path /events --request-timeout 30 || rc=1
echo "contract-live: fuzz_kafka $((t1 - t0)) s, schemathesis $(($(date +%s) - t1)) s"
exit $rc
