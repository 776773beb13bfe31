"""Fill-in-the-middle evaluation of the completion pipeline: tasks, holes, metrics, runs."""
