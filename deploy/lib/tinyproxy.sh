# shellcheck shell=bash
# A private forward proxy (Debian's tinyproxy) on a loopback port, for the proxy tests: it takes
# CONNECT to any port, which is how async-http-client goes through a proxy, for http and https.
# Source it, then:  proxy_start DIR PORT  (log in DIR/proxy.log)  /  proxy_stop DIR

proxy_start() {
  local dir=$1 port=$2
  ensure_packages tinyproxy
  mkdir -p "$dir"
  chmod o+rwx "$dir"  # tinyproxy drops to nobody and writes its log there
  cat > "$dir/tinyproxy.conf" <<CONF
User nobody
Group nogroup
Port $port
Listen 127.0.0.1
Timeout 60
LogFile "$dir/proxy.log"
LogLevel Connect
PidFile "$dir/tinyproxy.pid"
MaxClients 50
Allow 127.0.0.1
DisableViaHeader Yes
CONF
  port_is_free "$port" || die "port $port is taken; tinyproxy cannot listen there"
  tinyproxy -c "$dir/tinyproxy.conf" || die "tinyproxy did not start"
  wait_until 10 "tinyproxy listening on 127.0.0.1:$port (see $dir/proxy.log)" tinyproxy_ready "$dir" "$port"
  log "tinyproxy on 127.0.0.1:$port"
}

tinyproxy_ready() {
  [ -s "$1/tinyproxy.pid" ] && kill -0 "$(cat "$1/tinyproxy.pid")" && ! port_is_free "$2"
}

proxy_stop() {
  local dir=$1 pid
  pid=$(cat "$dir/tinyproxy.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
}
