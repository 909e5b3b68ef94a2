"""``python -m indexer.cli`` runs the command line."""

from indexer.cli.main import main

main()
