"""wisp's model runtime: context, prompts, generation, and post-processing."""
