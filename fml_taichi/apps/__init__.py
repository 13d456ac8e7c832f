"""The ``fml-taichi`` command line: one module per subcommand, argument parsing and printing only."""
