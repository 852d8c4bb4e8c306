# Sourced by ab.sh and instructions.sh for HTTP/2 over TLS (H2=tls): the certificate
# gateway-tls.yaml names, made once (self-signed, for 127.0.0.1), in /tmp/gateway-bench-tls/.
if [ ! -s /tmp/gateway-bench-tls/server.key ]; then
  mkdir -p /tmp/gateway-bench-tls
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout /tmp/gateway-bench-tls/server.key -out /tmp/gateway-bench-tls/server.crt 2>/dev/null
fi
