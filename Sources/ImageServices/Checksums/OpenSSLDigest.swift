import COpenSSLCrypto

/// SHA-384 and SHA-512 through OpenSSL's libcrypto, with value semantics.
///
/// swift-crypto's BoringSSL enables its fast SHA-512 code only on Intel CPUs ("AMD CPUs have slow
/// SHLD/SHRD"), so on this project's AMD machines it hashed 1 GiB in ~2.5 s, against ~1.5 s for
/// OpenSSL's AVX2 code — and SHA-512 is what Glance records (`os_hash_value`). No Swift package
/// wraps libcrypto's digests, hence this small wrapper.
struct OpenSSLDigest: @unchecked Sendable {
    // @unchecked: the context is copied before it is changed whenever it is shared (copy on write),
    // so two values never touch one context.
    private var context: Context

    /// A fresh digest; nil for an algorithm other than SHA-384 and SHA-512 (or if OpenSSL fails).
    init?(_ algorithm: HashAlgorithm) {
        let method: OpaquePointer?
        switch algorithm {
        case .sha384: method = EVP_sha384()
        case .sha512: method = EVP_sha512()
        default: return nil
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
