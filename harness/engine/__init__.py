"""Layer 4: the method API, the job context, the trainer, the evaluator and the training hooks."""
