"""`wisp` subcommands that belong to the server side."""
