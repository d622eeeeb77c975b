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


def test_a_run_writes_a_doc_block_that_its_own_rd_json_reproduces(tmp_path, monkeypatch):
    """The block and rd.json come from the same rounded numbers: a mean PSNR just above 34.125 dB once printed
    as 34.13 in the doc, but was stored in rd.json with 4 decimals as 34.125, which prints as 34.12. The model's
    mean PSNR is set to such an edge (31.01496: 31.01 unrounded, 31.02 from the stored 31.015), so that the check
    cannot pass by luck."""
    from PIL import Image
    import numpy as np

    summarize = rd_eval.summarize

    def summarize_on_a_rounding_edge(rows):
        averages = summarize(rows)
        for row in averages:
            if row["kind"] == "model":
                row["psnr"] = 31.01496
        return averages

    monkeypatch.setattr(rd_eval, "summarize", summarize_on_a_rounding_edge)

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:48, 0:64]
    for i in range(2):
        smooth = np.stack([xx * 3 + 20 * i, yy * 4, (xx + yy) * 2], -1).astype(np.float64)
        noisy = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(images / f"img{i}.png")
    doc = tmp_path / "doc.md"
    doc.write_text(f"# head\n\n{rd_eval.DOC_BEGIN}\nold\n{rd_eval.DOC_END}\n\ntail\n")
    out = tmp_path / "rd"
    assert rd_eval.main(["--data", str(images), "--full", "--models", "16c", "--codecs", "jpeg", "--no-curves",
                         "--no-plot", "--out", str(out), "--update-doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# head\n\n") and text.endswith("\n\ntail\n")
    block = text.split(rd_eval.DOC_BEGIN, 1)[1].split(rd_eval.DOC_END, 1)[0]
    result = json.loads((out / "rd.json").read_text())
    assert {(r["codec"], r["kind"]) for r in result["averages"]} == {("l3ic-16c", "model"), ("jpeg", "matched")}
    assert "| 31.02 |" in block
    assert block == "\n" + rd_eval.markdown_tables(result)
    assert (out / "rd_tables.md").read_text() == rd_eval.markdown_tables(result)
