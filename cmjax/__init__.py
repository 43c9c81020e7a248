"""cmjax: cross-modal retrieval in JAX.

Modules: `data` (datasets behind one interface), `evaluation` (retrieval
metrics), `train` (the shared training loop), `sampling`, `models`, `rbm`,
`features`, `preprocess`, `plotting`, `results`, and `methods.<name>`.
"""

__version__ = "0.1.0"
