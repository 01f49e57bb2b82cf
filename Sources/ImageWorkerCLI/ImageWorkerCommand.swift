import ArgumentParser

/// `image-worker`: an image fetcher for bare-metal clouds, speaking Ironic's RPC on RabbitMQ.
@main
struct ImageWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image-worker",
        abstract: "Fetches images for Ironic nodes from fetch_image tasks on RabbitMQ.",
        subcommands: [ServeCommand.self, FetchCommand.self, ShowCommand.self, InspectCommand.self, CallCommand.self, CastCommand.self, EventsCommand.self, ConfigCommand.self],
        defaultSubcommand: nil)
}
