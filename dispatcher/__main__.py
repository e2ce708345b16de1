"""``python -m dispatcher``: see :mod:`dispatcher.cli`."""

from .cli import main

main(prog_name="python -m dispatcher")
