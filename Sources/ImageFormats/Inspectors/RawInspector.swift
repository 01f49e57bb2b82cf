/// Raw: matches anything; chosen when nothing specific does.
final class RawInspector: FormatInspector {
    init() {
        super.init(.raw)
        addSafetyCheck(.null)
    }

    override func formatMatches() throws -> Bool { true }
}
