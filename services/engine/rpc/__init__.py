"""The engine's gRPC surface: thin servicers, proto <-> domain converters, the error table."""
