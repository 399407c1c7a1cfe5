#!/usr/bin/env bash
# make up: Postgres, RabbitMQ and every Dialer service under .run/, idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
run=$root/.run
bash "$root/deploy/local/stack.sh" infra-up "$run"
bash "$root/deploy/local/services.sh" start "$run"
echo "up: the stack is running; its settings are in .run/env:"
sed 's/^export /  /' "$run/env"
echo "up: try  . .run/env && curl -s -H \"x-api-key: \$DIALER_API_KEY\" \$DIALER_API_URL/v1/campaigns"
echo "up: stop it with  make down"
