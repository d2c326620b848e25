"""Layer 6: a study resolved once (spec -> plan), its jobs, and the aggregation of their results."""
