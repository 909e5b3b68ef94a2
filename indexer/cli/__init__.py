"""The ``soundtrace`` command line: the only package that knows click and rich. The console
script is ``indexer.cli.main:main``; ``python -m indexer.cli`` runs it too."""
