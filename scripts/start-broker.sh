#!/bin/bash
# Start the local RabbitMQ broker (with the management plugin) unless it is
# already up. Safe to run repeatedly; never stops a running broker.
set -u

# The ports can be moved (e.g. to try this script on a second node, together
# with RABBITMQ_NODENAME, RABBITMQ_NODE_PORT and friends, which rabbitmq reads).
AMQP_PORT=${SARRA_BROKER_PORT:-5672}
MGMT_PORT=${SARRA_MGMT_PORT:-15672}
API=http://127.0.0.1:$MGMT_PORT/api/overview

log() { echo "start-broker: $*"; }

amqp_port_open() {
    (exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT) 2>/dev/null
}

api_answers() {
    curl -fsS -m 5 -u guest:guest -o /dev/null "$API" 2>/dev/null
}

wait_api() {
    for _ in $(seq 1 60); do
        api_answers && return 0
        sleep 1
    done
    log "management API did not answer at $API" >&2
    return 1
}

await_node() {
    # await_startup can fail while the node is still registering with epmd.
    for i in $(seq 1 10); do
        if rabbitmqctl -q await_startup >/dev/null 2>&1; then
            return 0
        fi
        log "node not ready yet (try $i/10)"
        sleep 3
    done
    log "rabbitmqctl await_startup never succeeded; see /var/log/rabbitmq/" >&2
    return 1
}

# node_shares (pump nodes) routes through RabbitMQ's consistent-hash exchange: a plugin
# shipped with rabbitmq-server, enabled beside the management plugin.
HASH_PLUGIN=rabbitmq_consistent_hash_exchange
hash_plugin() {
    rabbitmq-plugins -q is_enabled $HASH_PLUGIN >/dev/null 2>&1 ||
        rabbitmq-plugins -q enable $HASH_PLUGIN >/dev/null 2>&1 ||
        log "could not enable $HASH_PLUGIN (node_shares needs it)" >&2
}

if amqp_port_open && api_answers; then
    log "broker already running (AMQP 127.0.0.1:$AMQP_PORT, management $MGMT_PORT)"
    command -v rabbitmq-plugins >/dev/null 2>&1 && hash_plugin
    exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "rabbitmq-server is not installed (run scripts/setup-host.sh as root)" >&2
    exit 1
fi

if amqp_port_open || rabbitmqctl -q status >/dev/null 2>&1; then
    log "broker running; enabling the management plugin"
    await_node || exit 1
    rabbitmq-plugins -q enable rabbitmq_management >/dev/null || {
        log "could not enable rabbitmq_management" >&2; exit 1; }
else
    # Enable the plugin offline so the node starts with it.
    rabbitmq-plugins -q enable --offline rabbitmq_management $HASH_PLUGIN >/dev/null 2>&1 || true
    log "starting rabbitmq-server"
    rabbitmq-server -detached || { log "rabbitmq-server -detached failed" >&2; exit 1; }
    await_node || exit 1
    # In case the offline enable did not take (e.g. older rabbitmq-plugins).
    if ! api_answers; then
        rabbitmq-plugins -q enable rabbitmq_management >/dev/null 2>&1 || true
    fi
fi

wait_api || exit 1
hash_plugin
for _ in $(seq 1 30); do
    amqp_port_open && break
    sleep 1
done
amqp_port_open || { log "AMQP port $AMQP_PORT not open" >&2; exit 1; }
log "broker ready (AMQP 127.0.0.1:$AMQP_PORT, management $API)"
