"""The import graph: no module imports one from a layer above its own."""

import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first; a module is in the layer of its longest matching prefix.
LAYERS = (
    ("cmjax.checks", "cmjax.devices", "cmjax.sources", "cmjax.files", "cmjax.console", "cmjax.precision", "cmjax.configs", "cmjax.features", "cmjax.text_graph", "cmjax.evaluation",
     "cmjax.similarity", "cmjax.sampling", "cmjax.optim", "cmjax.models", "cmjax.rbm",
     "cmjax.ot", "cmjax.hashing", "cmjax.metric_writer", "cmjax.plotting", "cmjax.pretrained",
     "cmjax.significance"),
    ("cmjax.data",),
    ("cmjax.preprocess", *(f"cmjax.configs.{os.path.basename(f)[:-3]}" for f in glob.glob(
        os.path.join(REPO, "cmjax", "configs", "[!_]*.py")))),
    ("cmjax.protocol", "cmjax.workdir"),
    ("cmjax.train", "cmjax.dbn"),
    ("cmjax.runner",),
    ("cmjax.methods.registry",),
    ("cmjax.methods",),
    ("cmjax.tune",),
    ("cmjax.reports",),
    ("cmjax.claims",),
    ("experiments",),
    ("benchmarks",),
)


def _layer(module: str) -> int:
  best = max(((len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
              if module == prefix or module.startswith(prefix + ".")), default=None)
  assert best is not None, f"{module} is in no layer of LAYERS"
  return best[1]


def _imports(path: str) -> set[str]:
  """The project modules `path` imports (`from a import b` counts as `a.b` when that is
  a module of the project, else as `a`)."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read())):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        full = f"{node.module}.{a.name}"
        as_path = os.path.join(REPO, *full.split("."))
        names.append(full if os.path.exists(as_path + ".py") or os.path.isdir(as_path)
                     else node.module)
    out.update(n for n in names if n.split(".")[0] in ("cmjax", "experiments", "benchmarks"))
  return out


def _modules():
  for folder in ("cmjax", "experiments", "benchmarks"):
    for path in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True):
      name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").replace(".__init__", "")
      yield name, path


def test_no_module_imports_from_a_layer_above():
  upward = [f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
            for name, path in _modules() for dep in sorted(_imports(path))
            if _layer(dep) > _layer(name)]
  assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
  """The test above can fail: a config file importing a method is caught."""
  path = tmp_path / "bad.py"
  path.write_text("from cmjax.methods import uncsm\nimport cmjax.runner\n")
  assert _imports(str(path)) == {"cmjax.methods.uncsm", "cmjax.runner"}
  assert _layer("cmjax.methods.uncsm") > _layer("cmjax.configs.uncsm")
  assert _layer("cmjax.runner") > _layer("cmjax.configs.uncsm")
