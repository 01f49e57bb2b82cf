internal import CRabbitMQ
import AMQPModel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// C memory for one librabbitmq call: strings, byte buffers and field tables copied out of Swift
/// values into malloc'd memory that stays valid until the arena is released. librabbitmq keeps
/// plain pointers (`amqp_bytes_t`), so a Swift string's temporary buffer would dangle.
final class CMemoryArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for allocation in allocations { free(allocation) }
    }

    /// The UTF-8 bytes of `text` as `amqp_bytes_t`.
    func bytes(_ text: String) -> amqp_bytes_t {
        bytes(Array(text.utf8))
    }

    /// A copy of `data` as `amqp_bytes_t`.
    func bytes(_ data: [UInt8]) -> amqp_bytes_t {
        let memory = allocate(max(data.count, 1))
        data.withUnsafeBytes { source in
            if let base = source.baseAddress { memory.copyMemory(from: base, byteCount: source.count) }
        }
        return amqp_bytes_t(len: data.count, bytes: memory)
    }

    /// A NUL-terminated copy of `text`.
    func cString(_ text: String) -> UnsafePointer<CChar> {
        let utf8 = Array(text.utf8)
        let memory = allocate(utf8.count + 1).bindMemory(to: CChar.self, capacity: utf8.count + 1)
        for (index, byte) in utf8.enumerated() { memory[index] = CChar(bitPattern: byte) }
        memory[utf8.count] = 0
        return UnsafePointer(memory)
    }

    /// `table` as an `amqp_table_t` whose entries live in this arena.
    func table(_ table: AMQPTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let count = table.entries.count
        let entries = allocate(MemoryLayout<amqp_table_entry_t>.stride * count)
            .bindMemory(to: amqp_table_entry_t.self, capacity: count)
        for (index, entry) in table.entries.enumerated() {
            (entries + index).initialize(to: amqp_table_entry_t(key: bytes(entry.key), value: fieldValue(entry.value)))
        }
        return amqp_table_t(num_entries: Int32(count), entries: entries)
    }

    private func fieldValue(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .bool(let v): field.kind = kind(AMQP_FIELD_KIND_BOOLEAN); field.value.boolean = v ? 1 : 0
        case .int8(let v): field.kind = kind(AMQP_FIELD_KIND_I8); field.value.i8 = v
        case .uint8(let v): field.kind = kind(AMQP_FIELD_KIND_U8); field.value.u8 = v
        case .int16(let v): field.kind = kind(AMQP_FIELD_KIND_I16); field.value.i16 = v
        case .uint16(let v): field.kind = kind(AMQP_FIELD_KIND_U16); field.value.u16 = v
        case .int32(let v): field.kind = kind(AMQP_FIELD_KIND_I32); field.value.i32 = v
        case .uint32(let v): field.kind = kind(AMQP_FIELD_KIND_U32); field.value.u32 = v
        case .int64(let v): field.kind = kind(AMQP_FIELD_KIND_I64); field.value.i64 = v
        case .uint64(let v): field.kind = kind(AMQP_FIELD_KIND_U64); field.value.u64 = v
        case .float(let v): field.kind = kind(AMQP_FIELD_KIND_F32); field.value.f32 = v
        case .double(let v): field.kind = kind(AMQP_FIELD_KIND_F64); field.value.f64 = v
        case .decimal(let scale, let v):
            field.kind = kind(AMQP_FIELD_KIND_DECIMAL)
            field.value.decimal = amqp_decimal_t(decimals: scale, value: v)
        case .longString(let v): field.kind = kind(AMQP_FIELD_KIND_UTF8); field.value.bytes = bytes(v)
        case .bytes(let v): field.kind = kind(AMQP_FIELD_KIND_BYTES); field.value.bytes = bytes(v)
        case .timestamp(let v): field.kind = kind(AMQP_FIELD_KIND_TIMESTAMP); field.value.u64 = v
        case .table(let v): field.kind = kind(AMQP_FIELD_KIND_TABLE); field.value.table = table(v)
        case .array(let values):
            field.kind = kind(AMQP_FIELD_KIND_ARRAY)
            let memory = allocate(MemoryLayout<amqp_field_value_t>.stride * max(values.count, 1))
                .bindMemory(to: amqp_field_value_t.self, capacity: max(values.count, 1))
            for (index, element) in values.enumerated() { (memory + index).initialize(to: fieldValue(element)) }
            field.value.array = amqp_array_t(num_entries: Int32(values.count), entries: memory)
        case .void: field.kind = kind(AMQP_FIELD_KIND_VOID)
        }
        return field
    }

    private func kind(_ kind: amqp_field_value_kind_t) -> UInt8 {
        UInt8(truncatingIfNeeded: kind.rawValue)
    }

    private func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer {
        guard let memory = malloc(byteCount) else { fatalError("out of memory allocating \(byteCount) bytes for librabbitmq") }
        allocations.append(memory)
        return memory
    }
}
