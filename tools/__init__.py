"""Tools around extsock that are not part of it: generators of the files shipped beside it.

`python -m tools man` writes docs/man/ (extsock.8 from the click commands, extsock.conf.5
from the policy schema); `python -m tools completion` writes contrib/bash-completion/extsock.
Each takes `--check` to fail, naming the file, when the committed copy differs.
"""
