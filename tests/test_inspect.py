"""inspect and report on a real output written by the pipeline in this module; the summary's
numbers are checked against pandas computations over the same Parquet files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest

from pipeline.inspect_output import VERDICTS, summarize
from runners.cli import main


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    out = tmp_path_factory.mktemp("enriched")
    assert main(["run", "--output", str(out), "--run-date", "2026-11-20", "--progress-interval", "0"]) == 0
    return str(out)


def frame(output: str, table: str) -> pd.DataFrame:
    df = pd.read_parquet(f"{output}/{table}")
    return df.assign(retailer=df["retailer"].astype(str), run_date=df["run_date"].astype(str))


def test_summary_numbers_match_pandas(output):
    s = summarize(output)
    assert s["run_date"] == "2026-11-20" and s["reconciled"]
    images, products, dead = frame(output, "images"), frame(output, "products"), frame(output, "dead_letter")
    assert s["rows"]["images"] == images.groupby("retailer").size().to_dict()
    assert s["rows"]["products"] == products.groupby("retailer").size().to_dict()
    assert s["rows"]["dead_letter"] == dead.groupby("retailer").size().to_dict()
    for retailer, group in products.groupby("retailer"):
        assert s["category_distribution"][retailer] == group["category"].fillna("(none)").value_counts().to_dict()
        assert s["gender_distribution"][retailer] == group["gender"].fillna("(none)").value_counts().to_dict()
        compared = group[group["category_agreement"].isin(VERDICTS)]
        expected = (compared["category_agreement"] == "DISAGREE").mean() if len(compared) else None
        assert s["disagreement"][retailer]["category"] == pytest.approx(expected)
        assert s["low_confidence_share"][retailer] == pytest.approx(group["category_low_confidence"].mean())
        # The default model serves an age group and a colour for every product (issue 17).
        assert s["age_group_distribution"][retailer] == group["age_group"].fillna("(none)").value_counts().to_dict()
        assert s["colour_distribution"][retailer] == group["colour"].fillna("(none)").value_counts().to_dict()
        ages = group[group["age_group_agreement"].isin(VERDICTS)]
        expected = (ages["age_group_agreement"] == "DISAGREE").mean() if len(ages) else None
        assert s["disagreement"][retailer]["age_group"] == pytest.approx(expected)
    reasons = {(r["retailer"], r["reason"]): r["count"] for r in s["dead_letter_reasons"]}
    assert reasons == dead.groupby(["retailer", "reason"]).size().to_dict()
    for r in s["dead_letter_reasons"]:  # examples come from their own (retailer, stage, reason) group
        group = dead[(dead.retailer == r["retailer"]) & (dead.stage == r["stage"]) & (dead.reason == r["reason"])]
        assert r["examples"] and {e["message"] for e in r["examples"]} <= set(group["message"])
    assert s["images_per_second"] > 0
    review = frame(output, "review")
    assert s["review"]["rows"] == len(review) and s["review"]["share"] == pytest.approx(len(review) / len(products))
    assert s["review"]["tiers"] == {r: g["review_tier_name"].value_counts().to_dict()
                                    for r, g in review.groupby("retailer")}
    first = review.sort_values(["review_tier", "review_priority", "product_id"], ascending=[True, False, True])
    assert [r["product_id"] for r in s["review"]["first"]] == first["product_id"].head(10).tolist()


def test_inspect_command_and_json(output, capsys):
    assert main(["inspect", output]) == 0
    text = capsys.readouterr().out
    assert "cat. disagree" in text and "dead letters:" in text and "MALFORMED_JSON" in text
    assert "age disagree" in text and "age groups (model, per product):" in text and "colours (per product):" in text
    assert "review queue: " in text and "first in the queue" in text
    assert main(["inspect", output, "--json", "--run-date", "2026-11-20"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"]["images"]["zalando"] == 33
    assert main(["inspect", output, "--run-date", "2001-01-01"]) == 2
    assert "no run for 2001-01-01" in capsys.readouterr().err


def test_inspect_refuses_a_folder_that_is_not_an_output(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "does not look like a fashion-enrich output" in capsys.readouterr().err


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self._in_h2 = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("class"), attrs.get("src", "")))
        self._in_h2 = tag in ("h2", "h3")  # sections and the review queue's tiers

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def _retailers(output: str) -> list[str]:
    """The run's retailers in the order of its sources (the report's vocabulary section)."""
    import json
    from pathlib import Path

    return [s["retailer"] for s in json.loads((Path(output) / "manifest.json").read_text())["sources"]]


def test_report_is_self_contained_with_plots_and_thumbnails(output, tmp_path, capsys):
    page_path = tmp_path / "report.html"
    assert main(["report", output, "--html", str(page_path)]) == 0
    page = _Page()
    page.feed(page_path.read_text())
    review = frame(output, "review")
    tiers = list(dict.fromkeys(review.sort_values("review_tier")["review_tier_name"]))
    assert page.headings == ["Counts", "Model categories per retailer", "Retailer category vs model category",
                             "Confidence per predicted class", "Dead-letter reasons", "Review queue",
                             *(f"{tier}: {(review.review_tier_name == tier).sum()}" for tier in tiers),
                             "Retailer vocabulary: what the images say", *_retailers(output)]
    assert f'href="{output}/review/run_date=2026-11-20/"' in page_path.read_text()
    plots = [src for cls, src in page.images if cls == "plot"]
    thumbs = [src for cls, src in page.images if cls == "thumb"]
    assert len(plots) == 4 and all(src.startswith("data:image/png;base64,") for src in plots)
    assert thumbs and all(src.startswith("data:image/jpeg;base64,") for src in thumbs)  # sample images are local
    assert all(src.startswith("data:") for _, src in page.images)  # nothing fetched from elsewhere
    queue = page_path.read_text().split("id=review>", 1)[1].split("id=vocabulary>", 1)[0]
    assert queue.count('class="thumb"') == sum(min(20, int((review.review_tier_name == tier).sum())) for tier in tiers)


# Runs in the page after load: each <img> drawn on a canvas, with its decoded size and the
# spread of its pixels (a blank or broken image has none).
_PROBE = """<script>
window.addEventListener('load', () => {
  const out = [...document.images].map(img => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    if (!c.width || !c.height) return [img.className, 0, 0, 0];
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let lo = 255, hi = 0;
    for (let i = 0; i < d.length; i += 4) {
      const v = (d[i] + d[i + 1] + d[i + 2]) / 3; lo = Math.min(lo, v); hi = Math.max(hi, v);
    }
    return [img.className, c.width, c.height, hi - lo];
  });
  const p = document.createElement('pre'); p.id = 'probe'; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script>"""


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not _browser() and not os.environ.get("CI"),
                    reason="headless Chromium not installed (Debian package 'chromium'; CI installs it)")
def test_report_renders_in_headless_chromium(output, tmp_path):
    """In a real browser: every plot and thumbnail decodes to a non-blank picture, and the page
    shows dark text and plots on white (CI installs Chromium, so there this test never skips)."""
    import re

    from PIL import Image

    browser = _browser()
    assert browser, "CI must install Chromium (apt-get install chromium): the browser test may not skip there"
    page_path, probed, shot = tmp_path / "report.html", tmp_path / "probed.html", tmp_path / "shot.png"
    assert main(["report", output, "--html", str(page_path)]) == 0
    probed.write_text(page_path.read_text().replace("</body>", _PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probed.as_uri()], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    plots = [i for i in images if i[0] == "plot"]
    thumbs = [i for i in images if i[0] == "thumb"]
    assert len(plots) == 4 and thumbs, images
    for cls, width, height, spread in images:
        assert width > 0 and height > 0, (cls, width, height)  # decoded by the browser
        assert spread > 20, (cls, spread)  # not a blank picture
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,3000", page_path.as_uri()],
                   check=True, timeout=120, capture_output=True)
    pixels = Image.open(shot).convert("L")
    assert pixels.getextrema()[0] < 100  # something dark (text, plots) was drawn on the white page
