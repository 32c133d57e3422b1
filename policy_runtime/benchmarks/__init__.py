"""Benchmarks shipped with the package (``prt bench ...``), so a deploy machine can run them."""
