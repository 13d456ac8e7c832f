"""File input and output: atomic writes, image loading, exports."""
