import Testing
@testable import AMQPModel

@Suite("transport_url parsing")
struct TransportURLTests {
    @Test("a single host with credentials and the default vhost")
    func singleHost() throws {
        let url = try TransportURL(parsing: "rabbit://guest:secret@broker.example:5673/")
        #expect(url.endpoints == [AMQPEndpoint(host: "broker.example", port: 5673, username: "guest", password: "secret", virtualHost: "/")])
    }

    @Test("several hosts for fail-over, each with its own credentials")
    func severalHosts() throws {
        let url = try TransportURL(parsing: "rabbit://u1:p1@h1:5672,u2:p2@h2:5674/ironic")
        #expect(url.endpoints.map(\.host) == ["h1", "h2"])
        #expect(url.endpoints.map(\.port) == [5672, 5674])
        #expect(url.endpoints.map(\.username) == ["u1", "u2"])
        #expect(url.endpoints.map(\.password) == ["p1", "p2"])
        #expect(url.endpoints.allSatisfy { $0.virtualHost == "ironic" })
    }

    @Test("a host without credentials takes the previous host's")
    func inheritedCredentials() throws {
        let url = try TransportURL(parsing: "rabbit://u:p@h1,h2:5680/")
        #expect(url.endpoints[1] == AMQPEndpoint(host: "h2", port: 5680, username: "u", password: "p", virtualHost: "/"))
    }

    @Test("percent-encoded user, password and vhost are decoded")
    func percentEncoding() throws {
        let url = try TransportURL(parsing: "amqp://us%40er:p%3Ass%2Fw%25rd@h/%2Fprod%20vh")
        let endpoint = try #require(url.endpoints.first)
        #expect(endpoint.username == "us@er")
        #expect(endpoint.password == "p:ss/w%rd")
        #expect(endpoint.virtualHost == "/prod vh")
    }

    @Test("ssl=1 in the query turns TLS on; other options are kept")
    func queryOptions() throws {
        let url = try TransportURL(parsing: "rabbit://u:p@h:5671/?ssl=1&amqp_durable_queues=true")
        #expect(url.endpoints.allSatisfy { $0.useTLS })
        #expect(url.option("amqp_durable_queues") == "true")
        #expect(url.option("missing") == nil)
    }

    @Test("IPv6 literal hosts")
    func ipv6() throws {
        let url = try TransportURL(parsing: "rabbit://u:p@[::1]:5700/")
        #expect(url.endpoints.first?.host == "::1")
        #expect(url.endpoints.first?.port == 5700)
    }

    @Test("the description masks passwords")
    func redaction() throws {
        let url = try TransportURL(parsing: "rabbit://user:topsecret@h:5672/")
        #expect(!url.description.contains("topsecret"))
        #expect(!url.endpoints[0].description.contains("topsecret"))
    }

    @Test("malformed URLs are refused with a message that names the problem", arguments: [
        ("http://h:5672/", "scheme"),
        ("rabbit//h", "transport_url must look like"),
        ("rabbit://u:p@h:99999/", "invalid port"),
        ("rabbit://u:p%zz@h/", "percent escape"),
    ])
    func malformed(text: String, expected: String) {
        #expect {
            _ = try TransportURL(parsing: text)
        } throws: { error in
            guard let error = error as? AMQPError else { return false }
            return error.code == .invalidArgument && error.message.contains(expected) && !error.message.contains("p%zz")
        }
    }
}

@Suite("reconnect back-off")
struct ReconnectPolicyTests {
    @Test("grows exponentially and is capped")
    func growth() {
        let policy = AMQPReconnectPolicy(initialDelay: .milliseconds(100), maximumDelay: .seconds(2), multiplier: 2, jitter: 0)
        #expect(policy.delay(beforeAttempt: 1, random: 0.3) == .milliseconds(100))
        #expect(policy.delay(beforeAttempt: 3, random: 0.3) == .milliseconds(400))
        #expect(policy.delay(beforeAttempt: 30, random: 0.3) == .seconds(2))
    }

    @Test("jitter takes up to its fraction off the delay")
    func jitter() {
        let policy = AMQPReconnectPolicy(initialDelay: .seconds(1), maximumDelay: .seconds(10), multiplier: 2, jitter: 0.5)
        #expect(policy.delay(beforeAttempt: 1, random: 0) == .seconds(1))
        #expect(policy.delay(beforeAttempt: 1, random: 1) == .milliseconds(500))
    }
}
