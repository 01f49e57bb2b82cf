# shellcheck shell=bash
# A private nginx for the HTTP(S) image tests, on loopback ports of its own. Source it, then:
#   nginx_start DIR PORT TLS_PORT CERT_DIR [CLIENT_TLS_PORT]
#       serves DIR/data over http://127.0.0.1:PORT and https://localhost:TLS_PORT (CERT_DIR/server.pem);
#       with CLIENT_TLS_PORT, also https://localhost:CLIENT_TLS_PORT, which demands a client
#       certificate signed by CERT_DIR/ca.pem
#   nginx_stop DIR
# What it serves, under DIR/data (the tests put images there):
#   /private/…         basic auth (user imageuser, password from $NGINX_TEST_PASSWORD)
#   /nohead/…          refuses HEAD with 405, as some servers do
#   /nostore/…         sends Cache-Control: no-store
#   /slow/…            sent at 16 MiB/s, to catch a download in the middle
#   /slow2m/…          sent at 2 MiB/s a connection, for many long downloads at once
#   /dir/              a folder without an index: 403, as Ironic's "source is a path" case
#   /redirect/hop1 → hop2 → hop3 → /images/redirected.img    a redirect chain
#   /redirect/to-file  a redirect to file:///etc/passwd
# The access log (DIR/logs/access.log) has method, path, status, bytes sent and the Range header.

nginx_start() {
  local dir=$1 port=$2 tls_port=$3 certs=$4 client_port=${5:-}
  ensure_packages nginx openssl
  mkdir -p "$dir"/{data/images,data/private,data/nohead,data/nostore,data/slow,data/slow2m,data/dir,logs,tmp}
  # nginx's workers run as nobody: they must be able to walk to the files (mktemp makes 0700 folders).
  chmod o+x "$(dirname "$dir")" "$dir"
  chmod -R o+rX "$dir/data"
  printf 'imageuser:%s\n' "$(openssl passwd -apr1 "${NGINX_TEST_PASSWORD:-image-pass}")" > "$dir/htpasswd"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    log_format transfers '\$request_method \$uri \$status \$body_bytes_sent "\$http_range"';
    access_log $dir/logs/access.log transfers;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        listen 127.0.0.1:$tls_port ssl;
        server_name localhost;
        ssl_certificate $certs/server.pem;
        ssl_certificate_key $certs/server.key;
        root $dir/data;
        autoindex off;
        location /private/ { auth_basic "images"; auth_basic_user_file $dir/htpasswd; }
        location /nohead/ { if (\$request_method = HEAD) { return 405; } }
        location /nostore/ { add_header Cache-Control "no-store"; }
        location /slow/ { limit_rate 16m; }
        location /slow2m/ { limit_rate 2m; }
        location = /redirect/hop1 { return 302 /redirect/hop2; }
        location = /redirect/hop2 { return 301 http://127.0.0.1:$port/redirect/hop3; }
        location = /redirect/hop3 { return 307 /images/redirected.img; }
        location = /redirect/to-file { return 302 file:///etc/passwd; }
        location = /redirect/loop { return 302 /redirect/loop; }
        location = /redirect/to-metadata { return 302 http://169.254.169.254/latest/meta-data/; }
        location ~ ^/redirect/to-port/([0-9]+)(/.*)\$ { return 302 http://127.0.0.1:\$1\$2; }
    }
$( [ -n "$client_port" ] && cat <<CLIENT
    server {
        listen 127.0.0.1:$client_port ssl;
        server_name localhost;
        ssl_certificate $certs/server.pem;
        ssl_certificate_key $certs/server.key;
        ssl_client_certificate $certs/ca.pem;
        ssl_verify_client on;
        root $dir/data;
    }
CLIENT
)
}
CONF
  nginx -c "$dir/nginx.conf" -p "$dir/" || die "nginx did not start (see $dir/logs/error.log)"
  wait_until 10 "nginx listening on 127.0.0.1:$port" curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$port/"
  log "nginx on http://127.0.0.1:$port and https://localhost:$tls_port serving $dir/data"
}

nginx_stop() {
  local dir=$1
  [ -f "$dir/nginx.pid" ] && nginx -c "$dir/nginx.conf" -p "$dir/" -s quit 2>/dev/null || true
}
