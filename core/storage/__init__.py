"""Files: the cache folder and writing a file whole or not at all."""
