"""LSP handlers, one module per feature; each module's `register` attaches them to a server."""

from lsp_server.features import completion, edits, lifecycle, metrics, models
from lsp_server.server import WispServer


def create_server() -> WispServer:
    """A server with every feature registered."""
    server = WispServer()
    lifecycle.register(server)
    completion.register(server)
    metrics.register(server)
    models.register(server)
    edits.register(server)
    return server
