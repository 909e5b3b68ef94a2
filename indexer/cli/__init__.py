"""The ``soundtrace`` command line: the only package that knows click and rich."""
