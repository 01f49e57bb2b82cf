import NIOCore
import NIOHTTP1
import NIOPosix
import NIOConcurrencyHelpers

/// An HTTP server in the test process whose answers are scripted, for the failures a real server
/// will not produce on demand: a connection dropped mid-body, a stall, a lying Content-Length, a
/// server that ignores `Range`, an ETag that changes between attempts. (The real-server behaviour
/// is tested against nginx; this only injects faults.)
final class FaultServer: Sendable {
    /// How to answer one request.
    struct Answer: Sendable {
        var status: HTTPResponseStatus = .ok
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        /// Send only this many body bytes, then…
        var cutAfter: Int? = nil
        /// …close the connection (true) or go silent with it open (false).
        var closeAtCut: Bool = true
        /// Close the connection without answering at all (a server that resets).
        var closeWithoutAnswer: Bool = false
    }

    /// A request as the server saw it.
    struct Seen: Sendable {
        var method: HTTPMethod
        var uri: String
        var headers: HTTPHeaders
    }

    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let channel: any Channel
    private let recorder = Recorder()

    /// What the server saw and sent, shared by its connection handlers.
    private final class Recorder: Sendable {
        struct State {
            var requests: [Seen] = []
            var bodyBytesSent = 0
        }
        let state = NIOLockedValueBox(State())
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    let url: String

    /// Starts a server; `answer` is called for each request with the index of the request.
    init(_ answer: @escaping @Sendable (Int, Seen) -> Answer) async throws {
        let recorder = self.recorder
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(recorder: recorder, answer: answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        url = "http://127.0.0.1:\(channel.localAddress!.port!)"
    }

    /// Requests seen so far.
    var requests: [Seen] { recorder.state.withLockedValue { $0.requests } }
    /// Body bytes written to clients so far, all requests together.
    var bodyBytesSent: Int { recorder.state.withLockedValue { $0.bodyBytesSent } }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let recorder: Recorder
        let answer: @Sendable (Int, Seen) -> Answer
        var head: HTTPRequestHead?

        init(recorder: Recorder, answer: @escaping @Sendable (Int, Seen) -> Answer) {
            self.recorder = recorder
            self.answer = answer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body: break
            case .end:
                guard let head else { return }
                let seen = Seen(method: head.method, uri: head.uri, headers: head.headers)
                let index = recorder.state.withLockedValue { state -> Int in
                    state.requests.append(seen)
                    return state.requests.count - 1
                }
                respond(context: context, answer: answer(index, seen), method: head.method)
            }
        }

        private func respond(context: ChannelHandlerContext, answer: Answer, method: HTTPMethod) {
            if answer.closeWithoutAnswer {
                context.close(promise: nil)
                return
            }
            var headers = HTTPHeaders(answer.headers)
            // A chunked answer (Transfer-Encoding given) has no length; NIO frames the chunks.
            if !headers.contains(name: "Content-Length") && !headers.contains(name: "Transfer-Encoding") {
                headers.add(name: "Content-Length", value: String(answer.body.count))
            }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: answer.status, headers: headers))), promise: nil)
            let sent = method == .HEAD ? [] : Array(answer.body.prefix(answer.cutAfter ?? answer.body.count))
            if !sent.isEmpty {
                recorder.state.withLockedValue { $0.bodyBytesSent += sent.count }
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: sent)))), promise: nil)
            }
            if answer.cutAfter != nil, method != .HEAD {
                context.flush()
                if answer.closeAtCut { context.close(promise: nil) }
                return  // else: silent with the connection open
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
