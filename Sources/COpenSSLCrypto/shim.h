// OpenSSL's libcrypto (Debian libssl-dev, which librabbitmq-dev already depends on): only its
// message digests are used, for SHA-384/512 (see ImageServices' OpenSSLDigest.swift).
#include <openssl/evp.h>
