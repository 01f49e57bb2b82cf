import COpenSSLCrypto

/// One message digest through OpenSSL's libcrypto (EVP), with value semantics.
///
/// Every image digest goes through libcrypto: it picks, at run time, the fastest code the CPU has
/// (SHA-NI, AVX-512, AVX2, SSSE3). swift-crypto's BoringSSL was measured slower wherever the two
/// differ: SHA-256 25–40 % slower on an Intel Xeon without SHA-NI (AVX-512 there), SHA-512 about
/// 2× slower on AMD (its fast path is enabled only on Intel), and equal with SHA-NI. No Swift
/// package wraps libcrypto's digests, hence this small wrapper.
struct OpenSSLDigest: @unchecked Sendable {
    // @unchecked: the context is copied before it is changed whenever it is shared (copy on write),
    // so two values never touch one context.
    private var context: Context

    /// A fresh digest; nil only if libcrypto cannot start one (out of memory, a FIPS-only build).
    init?(_ algorithm: HashAlgorithm) {
        let method: OpaquePointer?
        switch algorithm {
        case .md5: method = EVP_md5()
        case .sha1: method = EVP_sha1()
        case .sha256: method = EVP_sha256()
        case .sha384: method = EVP_sha384()
        case .sha512: method = EVP_sha512()
        }
        guard let method, let context = Context(method) else { return nil }
        self.context = context
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if !isKnownUniquelyReferenced(&context) { context = context.copy() }
        EVP_DigestUpdate(context.pointer, bytes.baseAddress, bytes.count)
    }

    /// The digest's bytes (the running context is left as it was).
    func finalize() -> [UInt8] {
        let final = context.copy()
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        withExtendedLifetime(final) { _ = EVP_DigestFinal_ex(final.pointer, &output, &length) }
        return Array(output.prefix(Int(length)))
    }

    private final class Context {
        let pointer: OpaquePointer

        init?(_ method: OpaquePointer) {
            guard let pointer = EVP_MD_CTX_new() else { return nil }
            guard EVP_DigestInit_ex(pointer, method, nil) == 1 else {
                EVP_MD_CTX_free(pointer)
                return nil
            }
            self.pointer = pointer
        }

        private init(pointer: OpaquePointer) { self.pointer = pointer }

        func copy() -> Context {
            let duplicate = EVP_MD_CTX_new()!
            precondition(EVP_MD_CTX_copy_ex(duplicate, pointer) == 1, "EVP_MD_CTX_copy_ex failed")
            return Context(pointer: duplicate)
        }

        deinit { EVP_MD_CTX_free(pointer) }
    }
}
