"""Layer 1: errors, registries, seeding, atomic IO and locks, paths, provenance. Imports nothing of ours above it."""
