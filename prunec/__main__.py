"""``python -m prunec``: the command line (also what ``torchrun -m prunec`` launches)."""

from prunec.cli import main

main()
