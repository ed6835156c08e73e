"""`python -m extsock_py` is the `extsock` command."""

from extsock_py.cli import main

main()
