# Sourced by ci/bench-http.sh: starts nginx on
# 127.0.0.1:$NGINX_PORT from ci/nginx.conf, installing it when missing,
# and stops it when the calling script exits.
if ! command -v nginx >/dev/null; then
  echo "installing nginx (Debian package)..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) >/dev/null
fi
NGINX_PORT="${NGINX_PORT:-18080}"
NGINX_DIR="$(mktemp -d)"
sed -e "s|__DIR__|$NGINX_DIR|g" -e "s|__PORT__|$NGINX_PORT|g" "$(dirname "${BASH_SOURCE[0]}")/nginx.conf" >"$NGINX_DIR/nginx.conf"
nginx -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" &
NGINX_PID=$!
trap 'kill $NGINX_PID 2>/dev/null; wait $NGINX_PID 2>/dev/null; rm -rf "$NGINX_DIR"' EXIT
for _ in $(seq 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
