#!/usr/bin/env bash
# mkcerts.sh DIR — a self-signed CA and a server certificate it signs, for TLS between
# fedmarket's machines on a test network (never for production).
#
# Makes, in DIR:
#   ca.crt, ca.key          the CA (give ca.crt to clients; keep ca.key private)
#   server.pem, server.key  the server certificate (SAN IP:127.0.0.1, IP:::1, DNS:localhost;
#                           extendedKeyUsage serverAuth), signed by the CA
# All valid 365 days, keys EC P-256, private keys mode 0600.
#
# Idempotent: files that are present and valid are kept; a missing or broken server
# certificate is remade from the existing CA; a missing or broken CA makes a new CA and a
# new server certificate.
set -euo pipefail

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: $0 DIR   (writes ca.crt, ca.key, server.pem, server.key into DIR)" >&2
    exit 2
fi
command -v openssl >/dev/null || { echo "error: openssl is needed on PATH" >&2; exit 1; }

dir=$1
days=365
mkdir -p "$dir"
cd "$dir"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no

[dn]
CN = fedmarket test CA

[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF

new_key() {
    # umask in a subshell: the key file is 0600 from the moment it exists.
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
}

same_key() {  # same_key CERT KEY: the certificate holds the key's public half
    [[ $(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) == \
       $(openssl pkey -in "$2" -pubout 2>/dev/null) ]]
}

ca_ok() {
    [[ -s ca.crt && -s ca.key ]] && same_key ca.crt ca.key &&
        openssl x509 -in ca.crt -noout -checkend 86400 >/dev/null 2>&1
}

server_ok() {
    [[ -s server.pem && -s server.key ]] && same_key server.pem server.key &&
        openssl verify -CAfile ca.crt server.pem >/dev/null 2>&1 &&
        openssl x509 -in server.pem -noout -checkend 86400 >/dev/null 2>&1
}

made=()
if ! ca_ok; then
    new_key ca.key
    openssl req -x509 -new -config "$work/openssl.cnf" -extensions v3_ca \
        -key ca.key -days "$days" -out ca.crt
    made+=("ca.crt" "ca.key")
    rm -f server.pem  # signed by the old CA, if any: remake it below
fi
if ! server_ok; then
    new_key server.key
    openssl req -new -config "$work/openssl.cnf" -subj "/CN=localhost" \
        -key server.key -out "$work/server.csr"
    openssl x509 -req -in "$work/server.csr" -CA ca.crt -CAkey ca.key \
        -set_serial "0x$(openssl rand -hex 16)" -days "$days" \
        -extfile "$work/openssl.cnf" -extensions v3_server -out server.pem 2>/dev/null
    openssl verify -CAfile ca.crt server.pem >/dev/null
    made+=("server.pem" "server.key")
fi

if ((${#made[@]} == 0)); then
    echo "$(pwd): ca.crt, ca.key, server.pem, server.key already present and valid; nothing made"
else
    echo "$(pwd): made ${made[*]}"
fi
echo "  CA:     ca.crt (give to clients), ca.key (keep private)"
echo "  server: server.pem + server.key for 127.0.0.1, ::1, localhost; valid $days days"
