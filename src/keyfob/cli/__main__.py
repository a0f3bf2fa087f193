"""``python -m keyfob.cli``: the same as the ``keyfob`` script."""

from keyfob.cli.main import main

main()
