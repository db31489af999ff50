"""See the package docstring of `toolkit`."""
