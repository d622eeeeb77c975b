"""docs/rate-distortion.md shows exactly what tools/rd_eval.py makes of the stored docs/rd/rd.json."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import rd_eval  # noqa: E402


def test_the_generated_block_is_what_rd_eval_makes_of_rd_json():
    doc = (REPO / "docs" / "rate-distortion.md").read_text()
    assert doc.count(rd_eval.DOC_BEGIN) == 1 and doc.count(rd_eval.DOC_END) == 1, "the generated block's markers"
    block = doc.split(rd_eval.DOC_BEGIN, 1)[1].split(rd_eval.DOC_END, 1)[0]
    result = json.loads((REPO / "docs" / "rd" / "rd.json").read_text())
    assert block == "\n" + rd_eval.markdown_tables(result)


def test_the_stored_results_cover_every_bundled_model_and_jpeg():
    result = json.loads((REPO / "docs" / "rd" / "rd.json").read_text())
    kinds = {(s["codec"], s["kind"]) for s in result["averages"]}
    for name in ("16c", "32c", "64c"):
        assert (f"l3ic-{name}", "model") in kinds
    assert ("jpeg", "matched") in kinds and ("jpeg", "curve") in kinds
