import OutriderCore
import OutriderHTTP

/// SPEC §6 `headers`: set / add / remove on the request and on the response.
public final class HeadersFilter: HTTPFilter, @unchecked Sendable {
    public struct Operation: Sendable {
        public let name: ByteString       // lower-case
        public let value: HeaderTemplate
        public init(name: ByteString, value: HeaderTemplate) { self.name = name; self.value = value }
    }

    public var kind: StaticString { "headers" }
    let requestSet: [Operation]
    let requestAdd: [Operation]
    let requestRemove: [ByteString]
    let responseSet: [Operation]
    let responseAdd: [Operation]
    /// Response headers dropped: `remove` and the names `set` replaces.
    let responseDropped: [ByteString]

    public init(requestSet: [Operation], requestAdd: [Operation], requestRemove: [ByteString],
                responseSet: [Operation], responseAdd: [Operation], responseRemove: [ByteString]) {
        self.requestSet = requestSet
        self.requestAdd = requestAdd
        self.requestRemove = requestRemove
        self.responseSet = responseSet
        self.responseAdd = responseAdd
        responseDropped = responseRemove + responseSet.map(\.name)
    }

    public func decodeHeaders(_ context: FilterContext) -> FilterVerdict {
        for name in requestRemove { context.removeHeader(name) }
        for operation in requestSet { context.removeHeader(operation.name) }
        for operation in requestSet { appendLine(operation, context) }
        for operation in requestAdd { appendLine(operation, context) }
        return .proceed
    }

    private func appendLine(_ operation: Operation, _ context: FilterContext) {
        let scratch = context.scratch
        let start = scratch.writerIndex
        guard scratch.writableBytes > operation.name.count + 1024 else { return }
        scratch.append(operation.name)
        scratch.append(": ")
        operation.value.render(context, into: scratch)
        scratch.append("\r\n")
        context.requestHeaderLines.append(start..<scratch.writerIndex)
    }

    public func encodeHeaders(_ context: FilterContext) {
        guard !responseSet.isEmpty || !responseAdd.isEmpty else { return }
        let start = context.scratch.writerIndex
        renderLines(responseSet, context)
        renderLines(responseAdd, context)
        context.responseHeaderLines.append(start..<context.scratch.writerIndex)
    }

    private func renderLines(_ operations: [Operation], _ context: FilterContext) {
        let scratch = context.scratch
        for operation in operations {
            guard scratch.writableBytes > operation.name.count + 1024 else { return }
            scratch.append(operation.name)
            scratch.append(": ")
            operation.value.render(context, into: scratch)
            scratch.append("\r\n")
        }
    }

    public func removesResponseHeader(_ name: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        for dropped in responseDropped where dropped.equalsIgnoringCase(name, count: count) { return true }
        return false
    }
}
