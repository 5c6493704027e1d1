"""The GPT decoder, its memory-bound ops (PyTorch reference and native kernels), the chunked
output loss, and KV-cached generation."""
