internal import CRabbitMQ
import AMQPModel

// Copies of librabbitmq's C values into Swift values. Each copies at once: the C memory belongs
// to the connection's pools and is recycled by the next frame.

extension amqp_bytes_t {
    /// A copy of the bytes.
    var array: [UInt8] {
        guard len > 0, let bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: len))
    }

    /// The bytes decoded as UTF-8 (invalid sequences repaired).
    var string: String {
        guard len > 0, let bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: len), as: UTF8.self)
    }
}

extension AMQPTable {
    /// A copy of a C field table.
    init(_ table: amqp_table_t) {
        var entries: [Entry] = []
        if let pointer = table.entries, table.num_entries > 0 {
            entries.reserveCapacity(Int(table.num_entries))
            for index in 0..<Int(table.num_entries) {
                let entry = pointer[index]
                entries.append(Entry(key: entry.key.string, value: AMQPFieldValue(entry.value)))
            }
        }
        self.init(entries)
    }
}

extension AMQPFieldValue {
    /// A copy of a C field value.
    init(_ field: amqp_field_value_t) {
        switch UInt32(field.kind) {
        case AMQP_FIELD_KIND_BOOLEAN.rawValue: self = .bool(field.value.boolean != 0)
        case AMQP_FIELD_KIND_I8.rawValue: self = .int8(field.value.i8)
        case AMQP_FIELD_KIND_U8.rawValue: self = .uint8(field.value.u8)
        case AMQP_FIELD_KIND_I16.rawValue: self = .int16(field.value.i16)
        case AMQP_FIELD_KIND_U16.rawValue: self = .uint16(field.value.u16)
        case AMQP_FIELD_KIND_I32.rawValue: self = .int32(field.value.i32)
        case AMQP_FIELD_KIND_U32.rawValue: self = .uint32(field.value.u32)
        case AMQP_FIELD_KIND_I64.rawValue: self = .int64(field.value.i64)
        case AMQP_FIELD_KIND_U64.rawValue: self = .uint64(field.value.u64)
        case AMQP_FIELD_KIND_F32.rawValue: self = .float(field.value.f32)
        case AMQP_FIELD_KIND_F64.rawValue: self = .double(field.value.f64)
        case AMQP_FIELD_KIND_DECIMAL.rawValue: self = .decimal(scale: field.value.decimal.decimals, value: field.value.decimal.value)
        case AMQP_FIELD_KIND_UTF8.rawValue: self = .longString(field.value.bytes.string)
        case AMQP_FIELD_KIND_BYTES.rawValue: self = .bytes(field.value.bytes.array)
        case AMQP_FIELD_KIND_TIMESTAMP.rawValue: self = .timestamp(field.value.u64)
        case AMQP_FIELD_KIND_TABLE.rawValue: self = .table(AMQPTable(field.value.table))
        case AMQP_FIELD_KIND_ARRAY.rawValue:
            var values: [AMQPFieldValue] = []
            if let entries = field.value.array.entries, field.value.array.num_entries > 0 {
                for index in 0..<Int(field.value.array.num_entries) { values.append(AMQPFieldValue(entries[index])) }
            }
            self = .array(values)
        default: self = .void
        }
    }
}

extension AMQPMessageProperties {
    /// A copy of C basic properties.
    init(_ p: amqp_basic_properties_t) {
        func has(_ flag: amqp_flags_t) -> Bool { p._flags & flag != 0 }
        self.init(
            contentType: has(IW_FLAG_CONTENT_TYPE) ? p.content_type.string : nil,
            contentEncoding: has(IW_FLAG_CONTENT_ENCODING) ? p.content_encoding.string : nil,
            headers: has(IW_FLAG_HEADERS) ? AMQPTable(p.headers) : nil,
            deliveryMode: has(IW_FLAG_DELIVERY_MODE) ? p.delivery_mode : nil,
            priority: has(IW_FLAG_PRIORITY) ? p.priority : nil,
            correlationID: has(IW_FLAG_CORRELATION_ID) ? p.correlation_id.string : nil,
            replyTo: has(IW_FLAG_REPLY_TO) ? p.reply_to.string : nil,
            expiration: has(IW_FLAG_EXPIRATION) ? p.expiration.string : nil,
            messageID: has(IW_FLAG_MESSAGE_ID) ? p.message_id.string : nil,
            timestamp: has(IW_FLAG_TIMESTAMP) ? p.timestamp : nil,
            type: has(IW_FLAG_TYPE) ? p.type.string : nil,
            appID: has(IW_FLAG_APP_ID) ? p.app_id.string : nil
        )
    }
}

extension CMemoryArena {
    /// `properties` as C basic properties whose strings live in this arena.
    func properties(_ properties: AMQPMessageProperties) -> amqp_basic_properties_t {
        var p = amqp_basic_properties_t()
        var flags: amqp_flags_t = 0
        if let v = properties.contentType { p.content_type = bytes(v); flags |= IW_FLAG_CONTENT_TYPE }
        if let v = properties.contentEncoding { p.content_encoding = bytes(v); flags |= IW_FLAG_CONTENT_ENCODING }
        if let v = properties.headers { p.headers = table(v); flags |= IW_FLAG_HEADERS }
        if let v = properties.deliveryMode { p.delivery_mode = v; flags |= IW_FLAG_DELIVERY_MODE }
        if let v = properties.priority { p.priority = v; flags |= IW_FLAG_PRIORITY }
        if let v = properties.correlationID { p.correlation_id = bytes(v); flags |= IW_FLAG_CORRELATION_ID }
        if let v = properties.replyTo { p.reply_to = bytes(v); flags |= IW_FLAG_REPLY_TO }
        if let v = properties.expiration { p.expiration = bytes(v); flags |= IW_FLAG_EXPIRATION }
        if let v = properties.messageID { p.message_id = bytes(v); flags |= IW_FLAG_MESSAGE_ID }
        if let v = properties.timestamp { p.timestamp = v; flags |= IW_FLAG_TIMESTAMP }
        if let v = properties.type { p.type = bytes(v); flags |= IW_FLAG_TYPE }
        if let v = properties.appID { p.app_id = bytes(v); flags |= IW_FLAG_APP_ID }
        p._flags = flags
        return p
    }
}
