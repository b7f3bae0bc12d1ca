"""docs/tour.ipynb is committed without outputs and runs clean in a real Jupyter kernel
(nbclient + ipykernel), full-size SE-ResNet-50 with the isolated (empty) weights cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

DOCS = Path(__file__).resolve().parents[1] / "docs"
TOUR = DOCS / "tour.ipynb"


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_tour_is_committed_without_outputs():
    nb = nbformat.read(TOUR, as_version=4)
    nbformat.validate(nb)
    for cell in _code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
def test_tour_runs_clean():
    nb = nbformat.read(TOUR, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(DOCS)}})
    client.execute()
    cells = _code_cells(nb)
    errors = [(c.source[:60], o.get("ename"), o.get("evalue")) for c in cells
              for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in cells for o in c.outputs
                   if o.output_type == "stream")
    assert "UNTRAINED" in text  # the isolated cache holds no pretrained file: it says so
    assert "with SE off in stage 5" in text
    html = [o["data"]["text/html"] for c in cells for o in c.outputs
            if "text/html" in o.get("data", {})]
    assert any("se_viz Capture" in h and "SE_5_3" in h for h in html)  # Capture._repr_html_
    figures = [o["data"]["application/vnd.plotly.v1+json"] for c in cells for o in c.outputs
               if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 7
    heatmap, profile, maps, compare, cam, attribution, deletion = figures
    assert [t["name"] for t in heatmap["data"]][:2] == ["SE_2_1", "SE_2_2"]
    assert {t["name"] for t in profile["data"]} >= {"mean", "entropy"}
    assert "SE_4_6" in json.dumps(maps["layout"]["title"])
    assert "rocket_falcon9_launch.jpg - cat_chelsea.jpg" in json.dumps(compare["layout"])
    assert [t["type"] for t in cam["data"]] == ["image", "heatmap"]  # Grad-CAM over the crop
    assert "Grad-CAM at SE_5_3" in json.dumps(cam["layout"]["title"])
    assert [t["name"] for t in attribution["data"]] == ["all channels", "top 10 by |attribution|"]
    assert [t["name"].split(" (area")[0] for t in deletion["data"]] == ["attribution", "gate",
                                                                         "random"]
