"""Text to token ids: the SentencePiece tokenizer and its word cache."""
