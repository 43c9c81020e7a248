r"""FGL presets (Xu et al. 2019).

  python -m experiments.fgl --dataset=web_news
  python -m experiments.fgl --dataset=web_news --config=cmjax/configs/fgl.py:binary

- `default`: fine-grained labels from the siamese text network (beta 1), the
  weighted pairwise loss, a Chebyshev GCN text path (K=3, 4 filters) on a
  2,000-bigram word graph where the dataset has raw captions, else an MLP.
- `binary`: the same with every pair weighing 1 (the paper's ablation).
- `mlp_text`: the same as `default` with a bag-of-words MLP text path (the
  word-graph signals, no graph convolution) in place of the GCN.
- `distribution`: the group's base model: binary labels, the distribution loss.
- `quick`: tiny budgets (smoke runs); not for reporting.
"""

from cmjax import configs
from cmjax.methods.fgl import FGLConfig

PRESETS = {
    "default": {},
    "binary": dict(labels="binary"),
    "mlp_text": dict(text_encoder="mlp"),
    "distribution": dict(labels="binary", loss="distribution"),
    "quick": dict(vocab_size=300, embed=64, text_hidden=(32,), siamese_dim=32,
                  siamese_steps=50, steps=100, eval_every=50),
}


def get_config(preset: str = "default"):
  return configs.to_config_dict(FGLConfig(**configs.preset_values(PRESETS, preset, __file__)))
