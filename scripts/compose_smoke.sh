#!/usr/bin/env bash
# The image and docker-compose.yml end to end on a real Docker Engine: build the image, start
# the stack as its own compose project, then /healthz, an admin token, a project, an upload,
# imported labels, a cycle to `labeling`, labels through the API, the API's and a worker's
# metrics, and `docker compose down -v`. Prints what it did with timings; exits non-zero at the
# first thing that fails (after printing the services' last log lines).
#
#   scripts/compose_smoke.sh
#
# Environment, all optional (docs/deploy.md, "Checking a deployment end to end"):
#   ANNOLOOP_PYTHON_IMAGE, ANNOLOOP_POSTGRES_IMAGE, ANNOLOOP_REDIS_IMAGE
#                       base images, e.g. from a registry mirror or local stand-ins
#   TORCH_VARIANT, TORCH_INDEX_URL, PIP_INDEX_URL    the image's build arguments
#   SMOKE_IMAGE         tag to build and run (annoloop:smoke); SMOKE_BUILD=0 runs it unbuilt
#   SMOKE_BUILD_NETWORK docker build --network (`host` where the engine has no bridge)
#   SMOKE_REDIS_PASSWORD  Redis password (default: a random one; empty: none)
#   SMOKE_PORT          host port of the API (default: a free one)
#   SMOKE_PROJECT       compose project name (annoloop-smoke): never a real stack's volumes
#   SMOKE_FLOWER=1      also start flower (ANNOLOOP_FLOWER_IMAGE) and ping the workers through
#                       its broker URL; it publishes 127.0.0.1:5555
#   SMOKE_KEEP=1        leave the stack running (stop it with the `down` line it prints)
# A .env in the checkout is not read for the compose file, but compose still hands it to the
# annoloop containers (their env_file): keep ANNOLOOP_METRICS_TOKEN and the like out of it.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${SMOKE_IMAGE:-annoloop:smoke}
PROJECT=${SMOKE_PROJECT:-annoloop-smoke}
N_POOL=100 N_TEST=20 BATCH=10
for tool in docker curl python3; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool is needed" >&2; exit 2; }
done
docker compose version >/dev/null 2>&1 || { echo "smoke: needs Docker Compose v2" >&2; exit 2; }

WORK=$(mktemp -d)
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '[%6.1fs] %s\n' "$(since "$T0")" "$*"; }
# A JSON field of stdin: `field '["id"]'`.
field() { python3 -c 'import json, sys; print(eval("d" + sys.argv[1], {"d": json.load(sys.stdin)}))' "$1"; }
T0=$(now)

# The script's own values win over the caller's environment and any .env (compose reads both).
export ANNOLOOP_IMAGE=$IMAGE
export ANNOLOOP_SECRET_KEY; ANNOLOOP_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export POSTGRES_PASSWORD; POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
# Production answers /metrics only with a token.
export ANNOLOOP_METRICS_TOKEN; ANNOLOOP_METRICS_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
if [ -z "${SMOKE_REDIS_PASSWORD+set}" ]; then
  SMOKE_REDIS_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
fi
export REDIS_PASSWORD=$SMOKE_REDIS_PASSWORD
export ANNOLOOP_HTTP_PORT; ANNOLOOP_HTTP_PORT=${SMOKE_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export ANNOLOOP_WORKER_STOP_GRACE=30s
BASE=http://127.0.0.1:$ANNOLOOP_HTTP_PORT
# --profile flower: `down` then also removes a flower container.
compose() {
  docker compose -p "$PROJECT" -f docker-compose.yml --env-file /dev/null --profile flower "$@"
}

down() {
  local t; t=$(now)
  compose down -v --remove-orphans >"$WORK/down.log" 2>&1 || cat "$WORK/down.log" >&2
  say "docker compose down -v: $(since "$t") s"
}
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "smoke: FAILED (exit $rc); the services' last lines:" >&2
    compose ps -a >&2 || true
    compose logs --no-color --tail 40 >&2 || true
  fi
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then
    echo "smoke: left running; stop with: docker compose -p $PROJECT down -v"
  else
    down
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap finish EXIT

# ---- build ---------------------------------------------------------------------------------
if [ "${SMOKE_BUILD:-1}" != 0 ]; then
  args=(--build-arg "TORCH_VARIANT=${TORCH_VARIANT:-cpu}")
  for name in TORCH_INDEX_URL PIP_INDEX_URL; do
    [ -z "${!name:-}" ] || args+=(--build-arg "$name=${!name}")
  done
  [ -z "${ANNOLOOP_PYTHON_IMAGE:-}" ] || args+=(--build-arg "PYTHON_IMAGE=$ANNOLOOP_PYTHON_IMAGE")
  [ -z "${SMOKE_BUILD_NETWORK:-}" ] || args+=(--network "$SMOKE_BUILD_NETWORK")
  say "docker build ${args[*]} -t $IMAGE ."
  t=$(now)
  if ! docker build "${args[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
    tail -n 30 "$WORK/build.log" >&2
    exit 1
  fi
  say "built in $(since "$t") s"
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
variant=$(docker run --rm --network none "$IMAGE" cat /opt/venv/torch-variant)
say "image $IMAGE: $(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }') ($size bytes); $variant"

# The test data, made by the image itself (the demo digits it ships): an .npz of pool and test
# images, and the labels to import (2 per class from the pool, the whole test split).
docker run --rm --network none "$IMAGE" python -c "
import io, sys, numpy as np
from app.demo.seed import load_demo_arrays
images, _ = load_demo_arrays()
buf = io.BytesIO()
np.savez(buf, images=images[:$N_POOL + $N_TEST],
         split=np.array(['pool'] * $N_POOL + ['test'] * $N_TEST),
         external_ids=np.array([f'd{i}' for i in range($N_POOL + $N_TEST)]))
sys.stdout.buffer.write(buf.getvalue())" >"$WORK/digits.npz"
docker run --rm --network none "$IMAGE" python -c "
import json, numpy as np
from app.demo.seed import load_demo_arrays
_, labels = load_demo_arrays()
seed = [int(np.flatnonzero(labels[:$N_POOL] == d)[k]) for d in range(10) for k in range(2)]
rows = [{'external_id': f'd{i}', 'annotator': 'seed', 'class_index': int(labels[i])} for i in seed]
rows += [{'external_id': f'd{i}', 'annotator': 'truth', 'class_index': int(labels[i])}
         for i in range($N_POOL, $N_POOL + $N_TEST)]
truth = {f'd{i}': int(labels[i]) for i in range($N_POOL)}
print(json.dumps({'rows': rows, 'truth': truth}))" >"$WORK/labels.json"
python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["rows"]))' \
  "$WORK/labels.json" >"$WORK/import.json"

# ---- up ------------------------------------------------------------------------------------
say "docker compose -p $PROJECT up -d (API on $BASE, Redis password: $([ -n "$REDIS_PASSWORD" ] && echo set || echo none))"
t_up=$(now)
compose up -d --no-build postgres redis migrate api worker >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
say "up -d returned after $(since "$t_up") s (migrate exited $(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -a -q migrate)"))"

health() { docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$1")"; }
wait_until() {  # SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
  local limit=$1 what=$2 t; shift 2; t=$(now)
  while ! "$@" >/dev/null 2>&1; do
    if awk -v a="$t" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      echo "smoke: no $what after $limit s" >&2
      return 1
    fi
    sleep 1
  done
}
wait_until 180 "answer from /healthz" curl -sf "$BASE/healthz"
say "/healthz answers 200 after $(since "$t_up") s: $(curl -sf "$BASE/healthz")"
api_healthy() { [ "$(health api)" = healthy ]; }
wait_until 180 "healthy api container" api_healthy
say "api container healthy (Docker HEALTHCHECK) after $(since "$t_up") s"

if [ -n "$REDIS_PASSWORD" ]; then
  anon=$(compose exec -T -e REDISCLI_AUTH= redis redis-cli ping 2>/dev/null || true)
  [[ "$anon" != *PONG* ]] || { echo "smoke: Redis answered without the password" >&2; exit 1; }
  say "Redis without the password: ${anon//$'\n'/ }"
fi

# ---- the API -------------------------------------------------------------------------------
ADMIN=$(compose exec -T api annoloop create-admin | tail -n 1)
[ -n "$ADMIN" ] || { echo "smoke: create-admin printed no token" >&2; exit 1; }
say "admin token from 'annoloop create-admin' (${ADMIN:0:6}...)"
call() {  # TOKEN METHOD PATH [curl args]: the body; fails on an HTTP error
  local token=$1 method=$2 path=$3; shift 3
  curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $token" "$@" "$BASE/api/v1$path"
}
JSON=(-H 'Content-Type: application/json')

pid=$(call "$ADMIN" POST /projects "${JSON[@]}" -d "{\"name\": \"smoke\",
  \"classes\": [\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"],
  \"model_spec\": {\"name\": \"small_cnn\", \"input_shape\": [1, 28, 28], \"hparams\": {\"epochs\": 2}},
  \"strategy\": \"entropy\", \"batch_size\": $BATCH}" | field '["id"]')
say "project $pid created"
out=$(call "$ADMIN" POST "/projects/$pid/items:bulk" -F "archive=@$WORK/digits.npz")
say "uploaded $(echo "$out" | field '["created"]') items: $(echo "$out" | field '["splits"]')"
out=$(call "$ADMIN" POST "/projects/$pid/annotations:import" "${JSON[@]}" --data-binary "@$WORK/import.json")
say "imported $(echo "$out" | field '["created"]') labels"

t_cycle=$(now)
cid=$(call "$ADMIN" POST "/projects/$pid/cycles" "${JSON[@]}" -d '{}' | field '["id"]')
cycle_state() { call "$ADMIN" GET "/projects/$pid/cycles/$cid" | field '["state"]'; }
labeling() {
  local s; s=$(cycle_state)
  [ "$s" != failed ] || { call "$ADMIN" GET "/projects/$pid/cycles/$cid" >&2; exit 1; }
  [ "$s" = labeling ]
}
wait_until 600 "cycle in labeling" labeling
cycle=$(call "$ADMIN" GET "/projects/$pid/cycles/$cid")
say "cycle $cid: created -> labeling in $(since "$t_cycle") s; timings $(echo "$cycle" | field '["timings"]'); test $(echo "$cycle" | field '["metrics"].get("test")'); device $(echo "$cycle" | field '["metrics"].get("device")')"

# Labels as an annotator would give them: lease the next item, label it, until none is left.
annotator=$(call "$ADMIN" POST /annotators "${JSON[@]}" -d '{"name": "smoke-annotator"}')
aid=$(echo "$annotator" | field '["id"]')
ANNOTATOR=$(echo "$annotator" | field '["token"]')
call "$ADMIN" POST "/projects/$pid/members" "${JSON[@]}" -d "{\"annotator_id\": $aid}" >/dev/null
labelled=0
while :; do
  next=$(call "$ANNOTATOR" GET "/projects/$pid/next")
  [ "$(echo "$next" | field '["status"]')" = leased ] || break
  item=$(echo "$next" | field '["item"]["id"]')
  ext=$(echo "$next" | field '["item"]["external_id"]')
  k=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["truth"][sys.argv[2]])' "$WORK/labels.json" "$ext")
  call "$ANNOTATOR" POST "/items/$item/annotations" "${JSON[@]}" \
    -d "{\"class_index\": $k, \"idempotency_key\": \"smoke-$item\"}" >/dev/null
  labelled=$((labelled + 1))
done
[ "$labelled" -eq "$BATCH" ] || { echo "smoke: labelled $labelled items, expected $BATCH" >&2; exit 1; }
progress=$(call "$ADMIN" GET "/projects/$pid/progress")
say "annotator labelled $labelled items through next/submit; then: $(echo "$next" | field '["status"]') ($(echo "$next" | field '["reason"]')); labels_spent $(echo "$progress" | field '["labels_spent"]'), queue_depth $(echo "$progress" | field '["queue_depth"]')"

# ---- metrics -------------------------------------------------------------------------------
sample() {  # FILE NAME LABEL=VALUE...: the value of the one matching sample
  python3 - "$@" <<'EOF'
import re, sys
path, name, *labels = sys.argv[1:]
for line in open(path):
    m = re.match(r"([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line.strip())
    if not m or m[1] != name:
        continue
    have = dict(re.findall(r'(\w+)="([^"]*)"', m[2] or ""))
    if all(have.get(k) == v for k, v in (x.split("=", 1) for x in labels)):
        print(float(m[3]))
        sys.exit(0)
sys.exit(f"no sample {name} {labels}")
EOF
}
curl -sf -H "Authorization: Bearer $ANNOLOOP_METRICS_TOKEN" "$BASE/metrics" >"$WORK/api.prom"
human=$(sample "$WORK/api.prom" annoloop_labels_total project="$pid" source=human)
imported=$(sample "$WORK/api.prom" annoloop_labels_total project="$pid" source=import)
train=$(sample "$WORK/api.prom" annoloop_cycle_phase_seconds project="$pid" phase=train)
say "API /metrics: labels_total human=$human import=$imported, cycle_phase_seconds train=$train"
[ "${human%.*}" -eq "$BATCH" ] || { echo "smoke: API counted $human human labels" >&2; exit 1; }
compose exec -T worker python -c \
  'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9808/metrics").read().decode())' \
  >"$WORK/worker.prom"
runs=$(sample "$WORK/worker.prom" annoloop_worker_tasks_total task=annoloop.cycles.run state=SUCCESS)
phases=$(sample "$WORK/worker.prom" annoloop_cycle_phase_duration_seconds_count project="$pid" phase=train)
say "worker :9808/metrics: tasks_total{cycles.run,SUCCESS}=$runs, cycle_phase_duration_seconds_count{train}=$phases"
[ "${runs%.*}" -ge 1 ] || { echo "smoke: the worker counted no finished cycle" >&2; exit 1; }
if [ "${SMOKE_FLOWER:-0}" = 1 ]; then
  compose up -d --no-build flower >"$WORK/flower.log" 2>&1 || { cat "$WORK/flower.log" >&2; exit 1; }
  wait_until 60 "answer from flower on 127.0.0.1:5555" curl -sf http://127.0.0.1:5555/healthcheck
  pong=$(compose exec -T flower celery inspect ping --timeout 10 2>&1) || { echo "$pong" >&2; exit 1; }
  say "flower answers on :5555; 'celery inspect ping' with its CELERY_BROKER_URL: $(grep -c pong <<<"$pong") worker(s) answered"
fi
worker_healthy() { [ "$(health worker)" = healthy ]; }
wait_until 120 "healthy worker container" worker_healthy
say "worker container healthy (Celery ping) after $(since "$t_up") s"
compose ps --format 'table {{.Service}}\t{{.Status}}' | sed 's/^/    /'
say "smoke: OK"
