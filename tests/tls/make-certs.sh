#!/bin/sh
# make-certs.sh DIR - the certificates the TLS tests use, made with the
# openssl command into DIR (which must exist). ECDSA P-256 throughout, so
# that it takes a fraction of a second.
#
#   ca.crt ca.key                 the test CA ("Plugboard Test CA")
#   server.crt server.key         CN=server, SAN IP:127.0.0.1 and DNS:localhost
#   server2.crt server2.key       CN=server2, same SANs, another serial
#   server-chain.crt              server.crt then ca.crt (a PEM holding the chain)
#   client.crt client.key         subject O=Plugboard Test, CN=client
#   expired.crt expired.key       the same subject, valid only in January 2020
#   wrongca.crt wrongca.key       the same subject, signed by another CA
#   tricky.crt tricky.key         O=Plugboard Test, CN=Zoë, "admin"+x,O=Admins: UTF-8,
#                                 and characters RFC 2253 escapes
#   other-ca.crt other-ca.key     that other CA
#
# Nothing here reads the system's openssl.cnf: the script writes its own.
set -eu

dir=${1:?usage: make-certs.sh DIR}
cd "$dir"

OPENSSL_CONF=$PWD/openssl-test.cnf
export OPENSSL_CONF
cat > "$OPENSSL_CONF" <<'CNF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server ]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ client ]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ca ]
default_ca = expired_ca
[ expired_ca ]
dir = .
database = ./ca-index.txt
new_certs_dir = .
serial = ./ca-serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
x509_extensions = client
[ any ]
organizationName = optional
commonName = supplied
CNF

key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 600 "$1"
}

# ca NAME SUBJECT
ca() {
    key "$1.key"
    openssl req -new -x509 -key "$1.key" -subj "$2" -days 3650 \
        -extensions v3_ca -set_serial "$3" -out "$1.crt"
}

# leaf NAME SUBJECT EXTENSIONS CA SERIAL
leaf() {
    key "$1.key"
    openssl req -new -utf8 -key "$1.key" -subj "$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA "$4.crt" -CAkey "$4.key" -set_serial "$5" \
        -days 3650 -extfile "$OPENSSL_CONF" -extensions "$3" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr"
}

ca ca "/O=Plugboard Test/CN=Plugboard Test CA" 1
ca other-ca "/O=Plugboard Test/CN=Plugboard Other CA" 1
leaf server "/O=Plugboard Test/CN=server" server ca 16
leaf server2 "/O=Plugboard Test/CN=server2" server ca 17
leaf client "/O=Plugboard Test/CN=client" client ca 32
leaf wrongca "/O=Plugboard Test/CN=client" client other-ca 33
leaf tricky '/O=Plugboard Test/CN=Zoë, "admin"\+x,O=Admins' client ca 34
cat server.crt ca.crt > server-chain.crt

# Expired: `openssl x509 -req` of OpenSSL 3.0 cannot set a start date,
# `openssl ca` can.
key expired.key
openssl req -new -key expired.key -subj "/O=Plugboard Test/CN=client" -out expired.csr
: > ca-index.txt
echo 30 > ca-serial
openssl ca -batch -notext -keyfile ca.key -cert ca.crt -in expired.csr \
    -startdate 20200101000000Z -enddate 20200201000000Z -out expired.crt 2>/dev/null
rm -f expired.csr ca-index.txt* ca-serial* 30.pem
