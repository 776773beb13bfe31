"""Training a small fill-in-the-middle code model: corpus, tokenizer, examples, loop, command."""
