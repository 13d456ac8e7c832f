"""Applications: the ``fml-taichi`` command line, the GGUI viewer, reconstruction."""
