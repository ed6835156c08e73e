"""``python -m extsock_py.bench``."""

from extsock_py.bench.cli import main

main()
