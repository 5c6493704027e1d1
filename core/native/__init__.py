"""Building and loading the native libraries (the kernels, the word table) through cffi."""
