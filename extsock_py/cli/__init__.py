"""The `extsock` command line: thin click commands that parse, call and print.

- `root`: the `extsock` group and the table of its commands, each imported when it is used,
  so that a client command does not load the daemon.
- `daemon`: `run` and `check-config`, the only commands that import the app.
- `failover`: the commands that talk to the running daemon over its control socket.
- `swanctl`: swanctl's commands, talking to charon directly; loading goes through the one
  sync usecase (usecases/swanctl_sync.py), listing through `render`.
- `render`: charon's answers as extsock's JSON documents and as swanctl-like text.
"""

from extsock_py.cli.root import main

__all__ = ["main"]
