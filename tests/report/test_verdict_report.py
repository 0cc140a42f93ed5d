"""The verdict at the top of every report, rates with their 95 % interval, and improvements that come
with collapsed normal outputs marked as such (never plain "better"), in report.md, report.html and
the terminal."""

import io

from unlearn.report import summary_rows, write_report_files


def _row(o, u, hib, unit="fraction", interval=None):
    r = {"original": o, "unlearned": u, "change": None if o is None or u is None else round(u - o, 4),
         "higher_is_better": hib, "better": None if o == u or o is None else (u > o) == hib, "unit": unit,
         "description": "d"}
    if interval:
        r["interval"] = interval
    return r


def _metrics(collapsed=True):
    top, distinct = (0.9, 0.1) if collapsed else (0.1, 0.9)
    return {
        "unlearn_version": "test",
        "run": {"output_dir": "/x/run", "model_dir": "/x/run/model", "original_model": "tiny", "status": "done",
                "steps": 60, "objective": {"ga": 1}, "stop_reason": "max_steps"},
        "settings": {"template": "qa", "max_new_tokens": 8, "decoding": "greedy", "bleu_threshold": 30.0,
                     "judge": None, "embedding_model": "m"},
        "sets": {r: {"n": 18, "source": "x.jsonl", "kind": "qa", "rule": "BLEU >= 30"}
                 for r in ("forget", "forget_test", "retain", "normal")},
        "metrics": {
            "forget": {"leak_rate": _row(0.5, 0.0, False, interval={"original": [0.29, 0.71], "unlearned": [0.0, 0.1759]}),
                       "diversity": _row(0.65, 0.99, True)},
            "forget_test": {"leak_rate": _row(0.5, 0.0, False, interval={"unlearned": [0.0, 0.1759]})},
            "retain": {"retain_accuracy": _row(1.0, 1.0, True)},
            "normal": {"similarity_cosine": _row(None, 0.15 if collapsed else 0.9, True, "cosine"),
                       "fluency": _row(2.3, 37.0 if collapsed else 2.5, False, "perplexity"),
                       "distinct_answers": _row(0.9, distinct, True), "top_answer_share": _row(0.1, top, False)},
        },
        "seconds": {"total": 1.0},
    }


def _printed(renderable) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=220, color_system=None).print(renderable)
    return buf.getvalue()


def test_improvements_with_collapsed_normal_outputs_are_not_plain_better(tmp_path):
    rows = {(r["set"], r["metric"]): r for r in summary_rows(_metrics())}
    caveat = "better, but normal outputs collapsed"
    assert rows[("forget", "leak_rate")]["verdict"] == caveat and rows[("forget", "leak_rate")]["mark"] == "caveat"
    assert rows[("forget", "diversity")]["verdict"] == caveat
    assert rows[("normal", "top_answer_share")]["verdict"] == "worse"
    fine = {(r["set"], r["metric"]): r for r in summary_rows(_metrics(collapsed=False))}
    assert fine[("forget", "leak_rate")]["verdict"] == "better" and fine[("forget", "leak_rate")]["mark"] == "better"

    folder = write_report_files(tmp_path / "eval", _metrics(), [])
    md = (folder / "report.md").read_text()
    assert f"| forget | leak_rate | 50.0% [29.0, 71.0] | 0.0% [0.0, 17.6] | -50.0 pp | {caveat} |" in md
    html = (folder / "report.html").read_text()
    assert "<tr class='caveat'>" in html and caveat in html and "tr.caveat td.change{color:#b26a00" in html

    from unlearn.report.terminal import eval_table

    text = _printed(eval_table(_metrics()))
    assert caveat in text and "0.0% [0.0, 17.6]" in text


def test_the_verdict_is_at_the_top_of_every_report(tmp_path):
    folder = write_report_files(tmp_path / "eval", _metrics(), [])
    md = (folder / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Summary")
    verdict = md.split("## Verdict", 1)[1].split("## Summary", 1)[0]
    assert "**Forgotten? yes**" in verdict and "**Utility kept? no**" in verdict
    # the numbers behind each answer, with the rule it was held to
    assert "| forget | leak_rate | 0.0% [0.0, 17.6] | <= 5.0% | met |" in verdict
    assert "| normal | similarity_cosine | 0.150 | >= 0.800 | missed |" in verdict
    assert "| normal | fluency | 37.00 | <= 2x original (2.30) | missed |" in verdict
    assert "| normal | top_answer_share | 90.0% | <= 50.0% (original 10.0%) | missed |" in verdict
    assert "collapsed" in verdict
    html = (folder / "report.html").read_text()
    assert html.index("<h2>Verdict</h2>") < html.index("<h2>Summary</h2>")
    assert "Forgotten? yes" in html and "Utility kept? no" in html and "0.0% [0.0, 17.6]" in html

    from unlearn.report.terminal import eval_table

    text = _printed(eval_table(_metrics()))
    assert text.index("Forgotten? yes") < text.index("Utility kept? no") < text.index("top_answer_share")
    fine = _printed(eval_table(_metrics(collapsed=False)))
    assert "Utility kept? yes" in fine


def test_the_verdict_follows_the_thresholds_written_in_metrics_json(tmp_path):
    from unlearn.config.evaluation import VerdictConfig
    from unlearn.evaluate.verdict import verdict

    m = _metrics(collapsed=False)
    m["verdict"] = verdict(m["metrics"], VerdictConfig(min_cosine=0.95))
    md = (write_report_files(tmp_path / "eval", m, []) / "report.md").read_text()
    assert "**Utility kept? no**" in md and "| normal | similarity_cosine | 0.900 | >= 0.950 | missed |" in md
