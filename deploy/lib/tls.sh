# shellcheck shell=bash
# Test certificates made with openssl at test time: a CA, a server certificate for localhost and a
# client certificate signed by it, and an unrelated CA (to check that verification refuses it).
# Source it, then:
#   make_test_certificates DIR   writes DIR/{ca.pem,ca.key,server.pem,server.key,client.pem,client.key,other-ca.pem}

make_test_certificates() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout ca.key -out ca.pem \
      -subj "/CN=image-worker test CA" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr -subj "/CN=localhost" >/dev/null 2>&1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -sha256 -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile server.ext -out server.pem >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout client.key -out client.csr -subj "/CN=image-worker test client" >/dev/null 2>&1
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -sha256 -days 2 -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile client.ext -out client.pem >/dev/null 2>&1
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout other-ca.key -out other-ca.pem \
      -subj "/CN=some other CA" >/dev/null 2>&1
    chmod 644 ./*.pem ./*.key
  ) || die "openssl could not make the test certificates in $dir"
}
