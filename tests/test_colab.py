"""The colab runs top to bottom."""

import os

import nbclient
import nbformat

COLABS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colabs")


def test_uncsm_colab_runs_top_to_bottom():
  path = os.path.join(COLABS, "uncsm_synthetic.ipynb")
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": COLABS}})
  client.execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any(o.output_type == "display_data" and "image/png" in o.data for o in outputs)
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "image test-0" in text and "+" in text
