"""Cross-modal retrieval methods built on the shared data, loop and evaluation."""
