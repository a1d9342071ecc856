"""``python -m batchinfer`` runs the command line."""

from batchinfer.cli import main

main()
