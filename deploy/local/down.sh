#!/usr/bin/env bash
# make down: stops every service, then RabbitMQ and Postgres; idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
run=$root/.run
bash "$root/deploy/local/services.sh" stop "$run"
if [[ -f $run/infra.env || -d $run/pg ]]; then
	bash "$root/deploy/local/stack.sh" infra-down "$run"
fi
echo "down: stopped"
