"""cmjax: cross-modal retrieval in JAX.

Modules: `data` (datasets and views behind one interface), `runner` (workdir,
fit, evaluate, write: the one runner), `configs` (typed configs and presets),
`methods.registry` (every method by name) and `methods.<name>`, `train` (the
shared training loop), `evaluation` (retrieval metrics), `hashing` (Hamming
index and hashing metrics), `ot` (earth mover's distance), `models`,
`similarity`, `optim`, `sampling`, `text_graph`, `rbm`, `dbn`, `features`,
`preprocess`, `plotting`.
"""

__version__ = "0.1.0"
