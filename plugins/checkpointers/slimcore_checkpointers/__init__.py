"""slimcore's checkpointers: `three_file` (.bin run state, .bin.embeddings, .bin.decoder);
and the `hf` export format (a Hugging Face LlamaForCausalLM folder)."""
