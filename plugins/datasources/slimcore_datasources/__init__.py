"""slimcore's data sources. Each module named by an entry point is one plugin:

    sample   one document per training row, padded, padding masked out of the loss
    chunk    documents joined by EOS into chunks of `chunk.tokens_per_chunk`, packed
    corpus   the reader beneath both and its settings (the YAML section `corpus`): shards
             (records.py) streamed with timeouts and retries (stream.py), the bundled corpus
             (bundled.py)
"""
