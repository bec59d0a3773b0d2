"""The HTML report as a reader sees it: rendered by headless Chromium (Debian's `chromium`).

A probe script injected at the top of a copy of report.html (the report itself has no script)
records errors and, once the page has loaded, measures it and writes the results into the DOM;
`--dump-dom` hands the DOM back. No browser driver package needed. Skipped without Chromium
(`apt-get install chromium`; .ci/run installs it).
"""
from __future__ import annotations

import html
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium (apt-get install chromium)")
# this machine's network is closed: nothing may try to reach it
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--virtual-time-budget=10000", "--dump-dom"]

PROBE = """<script>(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t.tagName ? "failed to load <" + t.tagName + ">" : String(e.message));
  }, true);
  ["error", "warn"].forEach(function (k) {
    var f = console[k];
    console[k] = function () {
      errors.push(k + ": " + [].join.call(arguments, " "));
      f.apply(console, arguments);
    };
  });
  ["alert", "confirm", "prompt"].forEach(function (k) {  // a dialog would block the page load
    window[k] = function (m) { errors.push(k + "(" + m + ") called"); };
  });
  function all(root, sel, f) { return [].map.call(root.querySelectorAll(sel), f); }
  function box(el) { var r = el.getBoundingClientRect(); return {left: r.left, right: r.right}; }
  function content() {
    var b = box(document.body), cs = getComputedStyle(document.body);
    return {left: b.left + parseFloat(cs.paddingLeft), right: b.right - parseFloat(cs.paddingRight)};
  }
  function image(i) {
    return {alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, box: box(i)};
  }
  function table(t) {
    var w = t.parentElement;
    return {headers: all(t, "th", function (h) { return h.textContent; }),
      text: t.classList.contains("text"), numCols: t.querySelectorAll("th.num").length,
      wrap: w.className, overflowX: getComputedStyle(w).overflowX, wrapBox: box(w),
      scrollWidth: w.scrollWidth, clientWidth: w.clientWidth,
      fontSize: parseFloat(getComputedStyle(t.querySelector("td") || t).fontSize),
      numAlign: all(t, "td.num", function (c) { return getComputedStyle(c).textAlign; })};
  }
  window.addEventListener("load", function () {
    var root = document.documentElement, out = document.createElement("pre");
    out.textContent = JSON.stringify({errors: errors, content: content(),
      page: {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth},
      images: all(document, "img", image), tables: all(document, "table", table)});
    out.id = "probe";
    out.style.display = "none";
    document.body.appendChild(out);
  });
})();</script>"""


def chromium_probe(report: Path, work: Path, width: int) -> dict:
    """Load a copy of `report` (alone in a fresh directory: it must stand alone) in a window
    `width` px wide; the probe's measurements plus the console lines Chromium logged."""
    page = work / f"page-{width}" / "report.html"
    page.parent.mkdir(parents=True)
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text and text.count("<head>") == 1
    page.write_text(text.replace("<head>", "<head>" + PROBE), encoding="utf-8")
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={page.parent / 'profile'}",
           f"--window-size={width},900", page.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', run.stdout, re.S)
    assert found, f"no probe results (rc {run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    result["console"] = [l for l in run.stderr.splitlines() if ":CONSOLE" in l]
    return result


def assert_readable(r: dict) -> None:
    """No errors, every image decoded, no table runs off the page, numbers right-aligned."""
    assert r["errors"] == [] and r["console"] == [], (r["errors"], r["console"])
    for img in r["images"]:
        assert img["complete"] and img["naturalWidth"] > 0, img
        assert img["box"]["right"] <= r["content"]["right"] + 1, img
    assert r["page"]["scrollWidth"] <= r["page"]["clientWidth"], r["page"]  # no sideways page scroll
    assert r["tables"]
    for t in r["tables"]:
        assert t["wrap"] == "table-wrap" and t["overflowX"] == "auto", t["headers"]
        assert t["wrapBox"]["right"] <= r["content"]["right"] + 1, (t["headers"], t["wrapBox"], r["content"])
        assert t["fontSize"] >= 12 and set(t["numAlign"]) <= {"right"}, t


def fits(t: dict) -> bool:
    return t["scrollWidth"] <= t["clientWidth"]


@pytest.fixture
def tone_report(tmp_path, monkeypatch):
    """The tone study's report on the fakes of tests/tone_fakes.py (as test_tone_equivalence)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    import adaptlab.evaluate.embed
    import adaptlab.lm.local
    import adaptlab.train.lora
    import tone_fakes as fakes

    from adaptlab.config import from_dict
    from adaptlab.runs.study import run_study
    from adaptlab.studies import tone

    def fake_tune(cfg, examples, out, source="data", eval_hook=None, **kw):
        fakes.fake_tune_files(Path(out), cfg.precision)
        return {"steps": 2, "final_loss": 1.5}

    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(adaptlab.evaluate.embed, "embed", fakes.fake_embed)
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", fakes.FakeLocalLM)
    monkeypatch.setattr(adaptlab.train.lora, "tune", fake_tune)
    run_study("tone", tone, from_dict(tone.Config, fakes.RECIPE))
    return tmp_path / "runs" / "golden" / "report" / "report.html"


def test_tone_report_reads_well_in_chromium(tone_report, tmp_path):
    start = time.monotonic()
    wide = chromium_probe(tone_report, tmp_path, 1280)
    assert_readable(wide)
    assert wide["images"]  # the systems' bars at least
    prose = [t for t in wide["tables"] if t["text"] and not t["numCols"]]  # side by side, at least
    assert prose and all(fits(t) for t in prose), prose  # running text wraps within the page
    narrow = chromium_probe(tone_report, tmp_path, 600)
    assert_readable(narrow)
    assert not all(fits(t) for t in narrow["tables"])  # some table needs its scroll container
    assert time.monotonic() - start < 60


SYSTEMS = ["base student, no system prompt", "base student + tone system prompt",
           "teacher as it made the training data (its prompt and facts, sampled)"]


def _hand_built_sections(stage: Path) -> list[dict]:
    """What a study logs: escaped text, a wide comparison, long side-by-side samples, plots."""
    from adaptlab.report.plots import bars, lines
    from adaptlab.report.render import table

    rows = [{"system": s, "rate": r, "ci_low": r - 0.1, "ci_high": r + 0.1}
            for s, r in zip(SYSTEMS, (.3, .6, .9))]
    curve = [{"xlabel": "step", "ylabel": "loss",
              "series": {"fp32": [(i, 2 - i / 10) for i in range(5)]}}]
    flat = [{**curve[0], "series": {"x": [(1, 1)]}}]
    wide = [{"system": s, **{f"metric {k} [95% CI]": "0.25 [0.09, 0.53]" for k in range(12)},
             "p vs prompted": "(reference)" if i == 1 else 0.004} for i, s in enumerate(SYSTEMS)]
    sample = "Well, you know, here's the thing about inflation: prices rise. You'll love it, it's neat! "
    side = [{"question": f"Question {q}?", **{f"system_{k}": sample * 2 for k in range(6)}}
            for q in range(3)]
    return [{"title": "<script>alert('x')</script>", "text": "</p><img src=x onerror=alert(1)>"},
            {"title": "comparison", "table": table(wide),
             "image": bars(stage / "bars.png", {"judge": rows}, "rate")},
            {"title": "curve", "image": lines(stage / "curve.png", curve)},
            {"title": "flat", "image": lines(stage / "flat.png", flat)},
            {"title": "side by side", "table": table(side)}]


def test_hand_built_report_with_plots_wide_and_long_tables(tmp_path):
    pytest.importorskip("matplotlib")
    from adaptlab.report.render import write_report

    d = tmp_path / "report"
    write_report(d, "hand-built", _hand_built_sections(tmp_path / "stage"), {})
    r = chromium_probe(d / "report.html", tmp_path, 1280)
    assert_readable(r)  # the injected <img> stays text: no element that failed to load
    assert [i["alt"] for i in r["images"]] == ["comparison", "curve"]  # "flat" had one point
    comparison, side = r["tables"]
    assert comparison["numCols"] == 13 and not fits(comparison)  # scrolls inside its container
    assert side["text"] and side["numCols"] == 0 and fits(side)  # long samples wrap instead
    assert_readable(chromium_probe(d / "report.html", tmp_path, 600))
