#!/usr/bin/env bash
# Starts or stops a real PyKMIP server for tests and demos.
#
#   scripts/kmip-server.sh start DIR   # makes certificates, config, starts, waits
#   scripts/kmip-server.sh stop DIR    # kills the server's process group
#
# start writes into DIR:
#   ca.pem ca.key            a throw-away CA
#   server.pem server.key    serverAuth, CN/SAN 127.0.0.1 + localhost
#   client.pem client.key    clientAuth, CN "wrapcrypt-client"
#   rogue-ca.pem rogue.pem rogue.key   a client signed by another CA (refused)
#   other.pem other.key      clientAuth, CN "other-host" (another identity)
#   noeku.pem noeku.key      signed by the CA but serverAuth only (refused)
#   expired.pem expired.key  clientAuth, expired yesterday (refused)
#   server.conf policy/ db.sqlite server.log
#   port pid                 the TCP port and the server's process-group id
# and prints "port=N".
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 1; }

gen_certs() {
  local d=$1
  cd "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=wrapcrypt test CA" \
    -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=rogue CA" \
    -keyout rogue-ca.key -out rogue-ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  leaf() { # name cn eku san ca
    local name=$1 cn=$2 eku=$3 san=$4 ca=$5
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    {
      echo "basicConstraints=CA:FALSE"
      echo "keyUsage=critical,digitalSignature"
      echo "extendedKeyUsage=$eku"
      [ -n "$san" ] && echo "subjectAltName=$san"
    } >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
      -days 2 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
  }
  leaf server 127.0.0.1 serverAuth "IP:127.0.0.1,DNS:localhost" ca
  leaf client wrapcrypt-client clientAuth "" ca
  leaf rogue wrapcrypt-client clientAuth "" rogue-ca
  leaf other other-host clientAuth "" ca
  leaf noeku wrapcrypt-client serverAuth "" ca
  # openssl 3.0's x509 cannot back-date a certificate; Python cryptography
  # (a PyKMIP dependency) can.
  python3 - "$PWD" <<'PY'
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
d = sys.argv[1]
ca_key = serialization.load_pem_private_key(open(d + "/ca.key", "rb").read(), None)
ca = x509.load_pem_x509_certificate(open(d + "/ca.pem", "rb").read())
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wrapcrypt-client")]))
    .issuer_name(ca.subject)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=10))
    .not_valid_after(now - datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    .sign(ca_key, hashes.SHA256())
)
open(d + "/expired.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(d + "/expired.key", "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
PY
  chmod 600 ./*.key
  cd - >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local d
  mkdir -p "$dir"
  d=$(cd "$dir" && pwd)
  if [ -f "$d/pid" ] && kill -0 "-$(cat "$d/pid")" 2>/dev/null; then
    echo "kmip-server: already running in $d (port $(cat "$d/port"))" >&2
    exit 5
  fi
  command -v pykmip-server >/dev/null || python3 -c 'import kmip' 2>/dev/null || {
    echo "kmip-server: PyKMIP is not installed; run scripts/install-deps.sh" >&2
    exit 1
  }
  [ -f "$d/client.pem" ] || gen_certs "$d"
  mkdir -p "$d/policy"
  # The free port is only free when it was picked: another process may take
  # it before the server binds, so a bind failure is retried on a new port.
  local attempt
  for attempt in 1 2 3; do
    launch "$d" && return 0
    grep -q "Address already in use" "$d/stdout.log" "$d/server.log" 2>/dev/null || break
    echo "kmip-server: port taken, retrying ($attempt)" >&2
  done
  exit 1
}

launch() {
  local d=$1 port
  port=$(free_port)
  cat >"$d/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$d/server.pem
key_path=$d/server.key
ca_path=$d/ca.pem
auth_suite=TLS1.2
policy_path=$d/policy
enable_tls_client_auth=True
tls_cipher_suites=
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
logging_level=INFO
database_path=$d/db.sqlite
CONF
  echo "$port" >"$d/port"
  # setsid: the server gets its own process group (and session), so stop
  # can kill the whole group. A background job of a script is not a group
  # leader, so setsid execs in place and $! is the server itself.
  setsid python3 -c 'from kmip.services.server.server import main; main()' \
    -f "$d/server.conf" -l "$d/server.log" >"$d/stdout.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$d/pid"
  local i
  for i in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port=$port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "kmip-server: the server exited; see $d/stdout.log and $d/server.log" >&2
      tail -3 "$d/stdout.log" >&2 || true
      rm -f "$d/pid"
      return 1
    fi
    sleep 0.05
  done
  echo "kmip-server: port $port did not open within 30 s; see $d/server.log" >&2
  kill -- "-$pid" 2>/dev/null || true
  rm -f "$d/pid"
  return 1
}

stop() {
  local d=$dir
  [ -f "$d/pid" ] || { echo "kmip-server: no server in $d" >&2; exit 0; }
  local pid
  pid=$(cat "$d/pid")
  kill -TERM -- "-$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$d/pid"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 1 ;;
esac
