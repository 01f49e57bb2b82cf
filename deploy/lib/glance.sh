# shellcheck shell=bash
# A private glance-api (Debian, no Keystone, sqlite, file store) on a loopback port of its own.
# Source it, then:
#   glance_start DIR PORT    images are stored as DIR/images/<id>; API on http://127.0.0.1:PORT
#   glance_stop DIR
# Without Keystone every request is an admin's, so tests can create images owned by any project;
# the worker applies Ironic's visibility rules itself.

glance_start() {
  local dir=$1 port=$2
  ensure_packages glance-api
  mkdir -p "$dir"/{etc,images,staging,lock,log}
  cp /etc/glance/glance-api-paste.ini "$dir/etc/"
  printf '"publicize_image": ""\n"communitize_image": ""\n' > "$dir/etc/policy.yaml"
  cat > "$dir/etc/glance-api.conf" <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $port
workers = 0
log_file = $dir/log/glance-api.log
use_stderr = false
transport_url = fake:/
node_staging_uri = file://$dir/staging
enforce_secure_rbac = false
show_image_direct_url = true
[database]
connection = sqlite:///$dir/glance.sqlite
[glance_store]
stores = file,http
default_store = file
filesystem_store_datadir = $dir/images/
[oslo_messaging_notifications]
driver = noop
[oslo_policy]
policy_file = $dir/etc/policy.yaml
enforce_new_defaults = false
enforce_scope = false
[oslo_concurrency]
lock_path = $dir/lock
[paste_deploy]
flavor =
config_file = $dir/etc/glance-api-paste.ini
CONF
  glance-manage --config-file "$dir/etc/glance-api.conf" db_sync > "$dir/log/db_sync.log" 2>&1 \
    || die "glance-manage db_sync failed (see $dir/log/db_sync.log)"
  setsid glance-api --config-file "$dir/etc/glance-api.conf" > "$dir/log/stdout.log" 2>&1 < /dev/null &
  echo $! > "$dir/glance-api.pid"
  local i
  for i in $(seq 600); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/healthcheck"; then
      log "glance-api on http://127.0.0.1:$port (store $dir/images)"
      return 0
    fi
    kill -0 "$(cat "$dir/glance-api.pid")" 2>/dev/null || { tail -n 20 "$dir/log/glance-api.log" >&2; die "glance-api exited while starting"; }
    sleep 0.1
  done
  die "glance-api did not answer within 60 s (see $dir/log)"
}

glance_stop() {
  local dir=$1 pid
  pid=$(cat "$dir/glance-api.pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
