"""wisp's Language Server Protocol front end: settings, handlers, and the command line."""

__version__ = "0.1.0"
