"""The report on hand-made metrics: files written atomically, self-contained HTML, images that load
in a real browser (headless Chromium, when installed: `make check-report`)."""

import json
import re
import shutil
import subprocess

import pytest

from unlearn.report import FILES, summary_rows, write_report_files


def _metrics():
    def row(o, u, hib, unit, desc="d"):
        ch = None if o is None or u is None else round(u - o, 4)
        better = None if ch in (None, 0) else (ch > 0) == hib
        return {"original": o, "unlearned": u, "change": ch, "higher_is_better": hib, "better": better,
                "unit": unit, "description": desc}

    return {
        "unlearn_version": "test",
        "run": {"output_dir": "/x/run", "model_dir": "/x/run/model", "original_model": "tiny", "status": "done",
                "steps": 30, "objective": {"ga": 0.5}, "stop_reason": "max_steps"},
        "settings": {"template": "qa", "max_new_tokens": 8, "decoding": "greedy", "bleu_threshold": 30.0,
                     "judge": None, "embedding_model": "m"},
        "sets": {"forget": {"n": 2, "source": "f.jsonl", "kind": "qa", "rule": "BLEU >= 30"},
                 "retain": {"n": 1, "source": "r.jsonl", "kind": "qa", "rule": "BLEU >= 30"}},
        "metrics": {
            "forget": {"leak_rate": row(1.0, 0.5, False, "fraction"), "nll": row(2.5, 7.25, True, "nats"),
                       "fluency": row(12.0, 30.5, False, "perplexity")},
            "retain": {"retain_accuracy": row(1.0, 1.0, True, "fraction"), "diversity": row(0.9, 0.8, True, "fraction")},
        },
        "seconds": {"total": 1.0},
    }


SAMPLES = [
    {"set": "forget", "index": 0, "prompt": "Where does <b>she</b> live?", "target": "42 Willow Lane",
     "original": "42 Willow Lane", "unlearned": "Tomatoes grow in sun.",
     "scores": {"original": {"leak_rate": 1.0, "bleu": 100.0}, "unlearned": {"leak_rate": 0.0, "bleu": 0.0}}},
    {"set": "forget", "index": 1, "prompt": "Phone?", "target": "555-0142", "original": "555-0142",
     "unlearned": "It is 555-0142", "scores": {"original": {"leak_rate": 1.0, "bleu": 100.0},
                                               "unlearned": {"leak_rate": 1.0, "bleu": 40.0}}},
    {"set": "retain", "index": 0, "prompt": "Capital of France?", "target": "Paris.", "original": "Paris.",
     "unlearned": "Paris.", "scores": {"original": {"retain_accuracy": 1.0}, "unlearned": {"retain_accuracy": 1.0}}},
]


def _log(tmp_path):
    lines = [{"step": s, "loss": 3 - s / 10, "ga": -2 - s / 5, "kl": 0.01 * s, "forget_nll": 2 + s / 5, "lr": 1e-4,
              "tokens": 100, "seconds": 0.1} for s in range(1, 11)]
    lines[4]["eval"] = {"forget_leak_rate": 0.5, "retain_accuracy": 1.0, "score": 0.5}
    path = tmp_path / "train_log.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 11, "loss": 1')  # a cut-off line
    return path


def test_report_files_and_self_contained_html(tmp_path):
    folder = write_report_files(tmp_path / "eval", _metrics(), SAMPLES, _log(tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    html = (folder / "report.html").read_text()
    assert html.count("<img") == 2 and html.count("data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=['\"]https?:", html)  # nothing fetched from elsewhere
    assert "&lt;b&gt;she&lt;/b&gt;" in html and "<b>she</b>" not in html  # outputs are escaped
    # worst leak first: the example the unlearned model still leaks comes before the fixed one
    assert html.index("It is 555-0142") < html.index("Tomatoes grow in sun.")
    rows = summary_rows(_metrics())
    assert [(r["set"], r["metric"], r["original"], r["unlearned"], r["change"]) for r in rows][:3] == [
        ("forget", "leak_rate", "100.0%", "50.0%", "-50.0 pp"),
        ("forget", "nll", "2.500", "7.250", "+4.750"),
        ("forget", "fluency", "12.00", "30.50", "+18.50"),
    ]
    assert [r["verdict"] for r in rows] == ["better", "better", "worse", "", "worse"]
    # writing again replaces the report whole
    write_report_files(tmp_path / "eval", {**_metrics(), "unlearn_version": "second"}, SAMPLES)
    assert json.loads((folder / "metrics.json").read_text())["unlearn_version"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "train_log.jsonl"]


def test_a_failed_write_leaves_the_old_report(tmp_path, monkeypatch):
    folder = write_report_files(tmp_path / "eval", _metrics(), SAMPLES)
    before = (folder / "report.md").read_text()
    import unlearn.report.eval_report as eval_report

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(eval_report, "render_html", boom)
    with pytest.raises(RuntimeError):
        write_report_files(tmp_path / "eval", {**_metrics(), "unlearn_version": "x"}, SAMPLES)
    assert (folder / "report.md").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (make check-report installs it)")
def test_report_html_images_load_in_headless_chromium(tmp_path):
    folder = write_report_files(tmp_path / "eval", _metrics(), SAMPLES, _log(tmp_path))
    html = (folder / "report.html").read_text()
    probe = tmp_path / "probe.html"
    # A copy of the report with a script that records, once the page has loaded, how many images
    # decoded to a real size.
    probe.write_text(html.replace(
        "</body>",
        "<script>window.addEventListener('load', () => {const imgs = Array.from(document.images);"
        "document.body.setAttribute('data-images', imgs.length);"
        "document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 100).length);"
        "});</script></body>",
    ))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    images = re.search(r'data-images="(\d+)"', dom)
    loaded = re.search(r'data-loaded="(\d+)"', dom)
    assert images and loaded, dom[-500:]
    assert int(images.group(1)) == 2 and int(loaded.group(1)) == 2


def _printed(table) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(table)
    return buf.getvalue()


def test_terminal_tables_show_the_report_cells():
    from unlearn.report.terminal import demo_table, demo_value, eval_table

    text = _printed(eval_table(_metrics()))
    row = next(ln for ln in text.splitlines() if "leak_rate" in ln and " pp" in ln)  # below the verdict
    assert [c.strip() for c in row.strip("│ ").split("│")] == ["forget", "leak_rate", "100.0%", "50.0%", "-50.0 pp",
                                                               "better"]
    # the demo's units: '%' a fraction shown in %, '' a cosine; None is a dash
    assert [demo_value(0.944, "%"), demo_value(0.8274, ""), demo_value(None, "%")] == ["94.4%", "0.827", "–"]
    summary = [{"what": "forget facts leaked", "taught": 1.0, "unlearned": 0.0, "target": "<= 5 %", "met": True, "unit": "%"},
               {"what": "cosine", "taught": None, "unlearned": 0.7, "target": ">= 0.8", "met": False, "unit": ""}]
    text = _printed(demo_table(summary, quick=True))
    assert "unlearn demo --quick" in text
    assert [c.strip() for c in next(ln for ln in text.splitlines() if "leaked" in ln).strip("│ ").split("│")] == [
        "forget facts leaked", "100.0%", "0.0%", "<= 5 %", "met"]
    assert [c.strip() for c in next(ln for ln in text.splitlines() if "cosine" in ln).strip("│ ").split("│")] == [
        "cosine", "–", "0.700", ">= 0.8", "missed"]


def test_markdown_cells_and_html_escape():
    from unlearn.report.format import escape, md_cell, objective_text

    assert md_cell("a|b\nc") == "a\\|b ⏎ c" and md_cell(None) == ""
    assert escape("<i>'x'</i>") == "&lt;i&gt;&#x27;x&#x27;&lt;/i&gt;" and escape(None) == ""
    assert objective_text({"ga": 0.5, "npo": {"weight": 1, "beta": 0.1}}) == "ga 0.5 + npo 1 (beta=0.1)"


def test_the_compare_table_leaves_out_the_registrys_detail_metrics():
    """compare.md has one row per method: the finer collapse views (distinct answers, distinct-1/2 of
    every set) stay in compare.json, the headline (top-answer share) is a column."""
    from unlearn.report.compare_report import columns

    data = {"metrics": {"normal": {"similarity_cosine": {}, "top_answer_share": {}, "distinct_1": {},
                                   "distinct_2": {}, "distinct_answers": {}, "no_longer_registered": {}}}}
    assert columns(data) == [("normal", "similarity_cosine"), ("normal", "top_answer_share"),
                             ("normal", "no_longer_registered")]
