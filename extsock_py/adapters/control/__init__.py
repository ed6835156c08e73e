"""The control socket: operators and applications drive the daemon over a unix socket.

Newline-delimited JSON, versioned (see docs/control-protocol.md): `wire` holds what both
ends share, `protocol` the message models, `server` the daemon side, `client` what the CLI
uses. Nothing is imported here, so that a client does not load the server and its models.
"""
