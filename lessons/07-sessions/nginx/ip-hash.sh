#!/usr/bin/env bash
# Where nginx's two sticky balancers send clients, measured: 24 clients in
# one /24 (127.0.1.10 to .33) and 24 in 24 different /24s (127.0.10.1,
# 127.0.11.1, …), each sending one request through nginx to two upstreams,
# first with `ip_hash`, then with `hash $remote_addr consistent`.
#
#   bash lessons/07-sessions/nginx/ip-hash.sh      # needs nginx, node, curl
#
# Everything runs in a private folder (deleted at the end) on 127.0.0.1;
# nginx is started with -p/-c on its own config, never the system's.
set -euo pipefail

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Two upstreams on port 0, each answering with its name and writing its
# port to a file once it listens.
for name in a b; do
  node -e "const s = require('http').createServer((q, r) => r.end('$name'));
    s.listen(0, '127.0.0.1', () => require('fs').writeFileSync('$dir/$name.port', String(s.address().port)))" &
  pids+=($!)
done
# A free port for nginx (nginx cannot listen on port 0).
port=$(node -e "const s = require('net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")
for name in a b; do
  until [[ -s $dir/$name.port ]]; do sleep 0.05; done
done
a=$(<"$dir/a.port") b=$(<"$dir/b.port")

run() { # $1: the upstream block's balancing line
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<CONF
error_log $dir/logs/error.log;
pid $dir/nginx.pid;
events {}
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  upstream app { $1; server 127.0.0.1:$a; server 127.0.0.1:$b; }
  server { listen 127.0.0.1:$port; location / { proxy_pass http://app; } }
}
CONF
  nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
  local nginx=$!
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
  local one_24='' many_24=''
  for i in $(seq 10 33); do
    one_24+=$(curl -s --interface "127.0.1.$i" "http://127.0.0.1:$port/")
  done
  for i in $(seq 10 33); do
    many_24+=$(curl -s --interface "127.0.$i.1" "http://127.0.0.1:$port/")
  done
  kill "$nginx"; wait "$nginx" 2>/dev/null || true
  count() { local s=$1; local a=${s//[^a]/}; local b=${s//[^b]/}; echo "a ${#a}, b ${#b}"; }
  printf '%-32s one /24: %-10s  24 /24s: %s\n' "$1" "$(count "$one_24")" "$(count "$many_24")"
}

nginx -v
run 'ip_hash'
run 'hash $remote_addr consistent'
