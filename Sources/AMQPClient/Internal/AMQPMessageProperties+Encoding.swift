internal import CRabbitMQ
import AMQPModel

extension AMQPMessageProperties {
    /// The property flags and list exactly as librabbitmq puts them in a content-header frame
    /// (after class, weight and body size), so tests can compare them with captured frames.
    func encodedForContentHeader() -> [UInt8] {
        let arena = CMemoryArena()
        defer { withExtendedLifetime(arena) {} }  // C holds pointers into it until here
        var properties = arena.properties(self)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let length = buffer.withUnsafeMutableBytes { raw in
            amqp_encode_properties(UInt16(AMQP_BASIC_CLASS), &properties, amqp_bytes_t(len: raw.count, bytes: raw.baseAddress))
        }
        precondition(length >= 0, "librabbitmq could not encode properties: \(length)")
        return Array(buffer.prefix(Int(length)))
    }
}
