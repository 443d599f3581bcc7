# Sourced by scripts/test: make sure Postgres, Redis and RabbitMQ answer on localhost; start them when installed but
# stopped (the commands this machine kind documents).
ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return 0; fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    echo "starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && return 0; sleep 1; done
  fi
  echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; return 1
}
ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return 0; fi
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && return 0; sleep 1; done
  fi
  echo "Redis is not answering on 127.0.0.1:6379" >&2; return 1
}
rabbitmq_answers() { timeout 2 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null; }
ensure_rabbitmq() {
  # optional: without it the RabbitMQ forms of the tests skip (and fail in CI, where it is required)
  if rabbitmq_answers; then return 0; fi
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "starting RabbitMQ" >&2
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do rabbitmq_answers && return 0; sleep 1; done
    echo "RabbitMQ is not answering on 127.0.0.1:5672: its tests will skip" >&2; return 0
  fi
  echo "RabbitMQ not installed: its tests will skip" >&2
}
