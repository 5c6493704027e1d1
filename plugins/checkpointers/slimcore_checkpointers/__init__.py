"""slimcore's checkpointers: `three_file` (.bin run state, .bin.embeddings, .bin.decoder)."""
