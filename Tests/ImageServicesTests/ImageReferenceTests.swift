import Primitives
import SystemSupport
import Testing
@testable import ImageServices

@Suite("image references")
struct ImageReferenceTests {
    @Test("schemes pick the service; bare UUIDs are Glance", arguments: [
        ("1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "glance"),
        ("1BE26C0B03F24D2EAE87C02D7F33C123", "glance"),
        ("glance://region/1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "glance"),
        ("HTTPS://example.com/x.img", "https"),
        ("file:///srv/x.img", "file"),
        ("oci://quay.io/a/b@sha256:00", "oci"),
    ])
    func schemes(text: String, scheme: String) throws {
        #expect(try ImageReference(text).scheme == scheme)
    }

    @Test("a scheme-less reference that is not a UUID is refused as Ironic does")
    func schemeless() {
        #expect {
            _ = try ImageReference("my-image")
        } throws: { error in
            let error = error as? IronicError
            return error?.code == .imageRefValidationFailed && error?.message.contains("Scheme-less image href is not a UUID.") == true
        }
    }

    @Test("control characters are refused, empty references are missing")
    func hostileText() {
        #expect(throws: IronicError.self) { _ = try ImageReference("file:///a\nb") }
        #expect { _ = try ImageReference("") } throws: { ($0 as? IronicError)?.code == .missingParameterValue }
    }

    @Test("redaction removes user-info and secret query values", arguments: [
        ("https://user:pa55@host.example/i.img", "https://host.example/i.img"),
        ("https://host/i.img?temp_url_sig=abc&temp_url_expires=1", "https://host/i.img?temp_url_sig=***&temp_url_expires=1"),
        ("https://b.s3/i?X-Amz-Signature=s&X-Amz-Credential=c&x=1", "https://b.s3/i?X-Amz-Signature=***&X-Amz-Credential=***&x=1"),
        ("http://h/i?token=t&api_key=k&password=p&secret=s&sig=z", "http://h/i?token=***&api_key=***&password=***&secret=***&sig=***"),
        ("file:///srv/x.img", "file:///srv/x.img"),
        ("oci://registry:5000/repo/disk@sha256:0a1b", "oci://registry:5000/repo/disk@sha256:0a1b"),
        ("https://[fd00::1]:8443/i.img", "https://[fd00::1]:8443/i.img"),
        // A password with `/`, `?` or `#` in it ends the authority where RFC 3986 says it does.
        ("http://svc:Ab3/xyz@host.example/i.img", "http://***@host.example/i.img"),
        ("http://svc:Ab?3@host.example/i.img?token=t", "http://***@host.example/i.img?token=***"),
        ("http://svc:A#b@host.example/i.img", "http://***@host.example/i.img"),
        // `user:pass@host` without `//` reads as the scheme `user`.
        ("svc:s3cret@host.example/i.img", "***@host.example/i.img"),
        ("http://h/i?pass=a&pwd=b&auth=c&passphrase=d&x=1", "http://h/i?pass=***&pwd=***&auth=***&passphrase=***&x=1"),
        ("http://h/i.img#access_token=t", "http://h/i.img#***"),
        // Passwords and tokens that look like a host and port, or a host and a path.
        ("http://svc:2024/abc@host.example/i.img", "http://***@host.example/i.img"),
        ("http://svc:2024?x@host.example/i.img", "http://***@host.example/i.img"),
        ("http://svc:123#x@host.example/", "http://***@host.example/"),
        ("https://dG9r/ZW4=@host.example/i.img", "https://***@host.example/i.img"),
        // Deliberately masked: a path's `@` before a host-like name cannot be told from a token's.
        ("http://host.example/v1@2x.img", "http://***@2x.img"),
        // Not credentials: a path, an IPv6 zone with a digest, a query value.
        ("file:/srv/images/disk@2.img", "file:/srv/images/disk@2.img"),
        ("oci://[fe80::1%25eth0]:5000/r@sha256:0a1b", "oci://[fe80::1%25eth0]:5000/r@sha256:0a1b"),
        ("http://h/i.img?email=a@b.example&x=1", "http://h/i.img?email=a@b.example&x=1"),
        // A URL in a query value or item (found by fuzzing) keeps no credential either.
        ("http://h/i.img?next=https://u:pw@mirror.example/i.img&x=1", "http://h/i.img?next=https://***@mirror.example/i.img&x=1"),
        ("http://h/i.img?next=//u:pw@mirror.example/&n=a@b.example", "http://h/i.img?next=//***@mirror.example/&n=a@b.example"),
        ("http://h/i.img?http://u:pw@m.example/&n=a@b.example", "http://h/i.img?http://***@m.example/&n=a@b.example"),
    ])
    func redaction(text: String, expected: String) throws {
        let reference = try ImageReference(text)
        #expect(reference.redacted == expected)
        #expect(reference.description == expected)
        #expect(reference.original == text)
    }

    @Test("UUIDs are recognised in Ironic's forms and made canonical")
    func uuids() {
        #expect(UUIDText.canonical("1BE26C0B-03F2-4D2E-AE87-C02D7F33C123") == "1be26c0b-03f2-4d2e-ae87-c02d7f33c123")
        #expect(UUIDText.canonical("1be26c0b03f24d2eae87c02d7f33c123") == "1be26c0b-03f2-4d2e-ae87-c02d7f33c123")
        #expect(UUIDText.canonical("../../etc") == nil)
        #expect(UUIDText.canonical("1be26c0b-03f2-4d2e-ae87-c02d7f33c12g") == nil)
        #expect(UUIDText.canonical("1be26c0b_03f2-4d2e-ae87-c02d7f33c123") == nil)
        // 32 or 36 bytes that are not 32 or 36 characters: refused, never cut inside a character.
        #expect(UUIDText.canonical(String(repeating: "é", count: 16)) == nil)
        #expect(UUIDText.canonical(String(repeating: "\r\n", count: 16)) == nil)
        #expect(UUIDText.canonical(String(repeating: "é", count: 18)) == nil)
        #expect(UUIDText.canonical("1be26c0b03f24d2eae87c02d7f33c12" + "é") == nil)
    }

    @Test("the registry refuses schemes nobody serves with Ironic's message")
    func registry() throws {
        var registry = ImageServiceRegistry()
        registry.register(FileImageService(policy: FilePathPolicy(allowedPaths: ["/tmp"])))
        #expect(registry.schemes == ["file"])
        #expect(try registry.service(for: ImageReference("file:///tmp/x")).name == "file")
        #expect {
            _ = try registry.service(for: ImageReference("usenet://x/y"))
        } throws: { error in
            (error as? IronicError)?.message.contains("Image download protocol usenet is not supported.") == true
        }
    }
}
