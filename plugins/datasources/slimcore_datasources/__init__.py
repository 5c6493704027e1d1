"""slimcore's data sources. Each module named by an entry point is one plugin:

    sample   one document per training row, padded, padding masked out of the loss
    chunk    documents joined by EOS into chunks of `chunk.tokens_per_chunk`, packed

Both read through `corpus.iter_documents`, which streams the corpus named by `data.path`
with Hugging Face `datasets`.
"""
