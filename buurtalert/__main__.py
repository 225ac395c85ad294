"""python -m buurtalert."""

from buurtalert.cli import main

main()
