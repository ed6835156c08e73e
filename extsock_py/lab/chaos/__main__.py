"""`python -m extsock_py.lab.chaos`: see cli.py."""

from extsock_py.lab.chaos.cli import main

raise SystemExit(main())
