"""`unlearn collect` and `unlearn forget`: the one-command path (unlearn.forgetting). Kept apart from
cli.py, which adds these commands to its app with `add_commands`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

MODEL_HELP = "The model: a local folder, a hub id, or a built-in alias (smollm2-135m)."
PROMPTS_HELP = ("Prompts: a text file (one per line), JSONL/CSV with a prompt field (prompt, Behavior, question, "
                "...), or (prompt, bad answer) pairs (a response/answer field).")
JUDGE_HELP = ("How a bad answer is told: topic (a non-refusal on the prompt's topic or close to --examples), "
              "contains (with --judge-strings), refusal, similarity (to --examples), classifier:PATH, llm:PATH.")

# The options both commands take, defined once (typer reads these as the parameters' defaults).
MODEL = typer.Option(..., "--model", help=MODEL_HELP)
PROMPTS = typer.Option(..., "--prompts", help=PROMPTS_HELP)
JUDGE = typer.Option("topic", "--judge", help=JUDGE_HELP)
SAMPLES = typer.Option(1, "--samples", help="Answers per prompt (the first greedy, the others sampled).")
JUDGE_STRINGS = typer.Option(None, "--judge-strings", help="contains judge: a file, one string per line.")
EXAMPLES = typer.Option(None, "--examples", help="Known bad answers, one per line (topic, similarity).")
PROMPT_FIELD = typer.Option(None, "--prompt-field", help="JSONL/CSV: the field holding the prompt (default: the first of prompt, Behavior, question, ...).")
DATASET = typer.Option(None, "--dataset", help="Read --prompts with this dataset adapter (unlearn datasets).")
MAX_NEW_TOKENS = typer.Option(48, "--max-new-tokens", help="Tokens per answer at most.")
TEMPLATE = typer.Option(None, "--template", help="qa, chat or a format string; default: chat when the tokenizer has one.")
BANK = typer.Option(None, "--bank", help="Your own retain bank (JSONL: prompt, category).")
SEED = typer.Option(0, "--seed")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing --out folder.")
OWN_ANSWERS = typer.Option(False, "--own-answers", help="Pairs with right answers: forget the model's OWN answers "
                           "that miss the right answer (not the given bad ones); the given ones still score the evaluation.")


def _lines(path: Optional[Path], what: str) -> list[str]:
    from unlearn.data.records import read_text_file
    from unlearn.errors import UnlearnError

    if path is None:
        return []
    if not path.exists():
        raise UnlearnError(f"{path}: {what} file not found")
    lines = [x.strip() for x in read_text_file(path).split("\n") if x.strip()]
    if not lines:
        raise UnlearnError(f"{path}: no {what} (the file is empty)")
    return lines


def _settings(judge: str, samples: int, judge_strings: Optional[Path], max_new_tokens: int, template: Optional[str],
              bank: Optional[Path], seed: int, own_answers: bool = False) -> Any:
    from unlearn.forgetting.collect import CollectSettings

    extra: dict[str, Any] = {}
    strings = _lines(judge_strings, "judge strings")
    if strings:
        extra["judge_strings"] = strings
    return CollectSettings(judge=judge, samples=samples, max_new_tokens=max_new_tokens, template=template,
                           bank=str(bank) if bank else None, seed=seed, eval=extra, own_answers=own_answers)


def add_commands(app: typer.Typer, friendly: Callable[..., Any], out: Any, err: Any) -> None:
    """Add `collect` and `forget` to the CLI's app (friendly: its one-line-error wrapper)."""

    @app.command()
    @friendly
    def collect(
        model: str = MODEL,
        prompts: Path = PROMPTS,
        out_dir: Path = typer.Option(Path("runs/collected"), "--out", help="Folder to write (whole or not at all)."),
        judge: str = JUDGE,
        samples: int = SAMPLES,
        own_answers: bool = OWN_ANSWERS,
        judge_strings: Optional[Path] = JUDGE_STRINGS,
        examples: Optional[Path] = EXAMPLES,
        test_prompts: Optional[Path] = typer.Option(None, "--test-prompts", help="Unseen prompts for the evaluation (test.jsonl)."),
        dataset: Optional[str] = DATASET,
        prompt_field: Optional[str] = PROMPT_FIELD,
        max_new_tokens: int = MAX_NEW_TOKENS,
        template: Optional[str] = TEMPLATE,
        bank: Optional[Path] = BANK,
        seed: int = SEED,
        overwrite: bool = OVERWRITE,
    ) -> None:
        """Ask the model, judge its answers, and write forget.jsonl (the bad ones), retain.jsonl and
        normal.jsonl (its own answers to the built-in retain bank) and collect.json."""
        from unlearn.forgetting.collect import NOTHING_TO_UNLEARN
        from unlearn.forgetting.collect import collect as collect_
        from unlearn.forgetting.prompts import read_prompts
        from unlearn.report.terminal import collect_table

        rows = read_prompts(prompts, dataset=dataset, prompt_field=prompt_field)
        tests = read_prompts(test_prompts) if test_prompts else []
        s = _settings(judge, samples, judge_strings, max_new_tokens, template, bank, seed, own_answers)
        res = collect_(model, rows, out_dir, s, test_rows=tests, examples=_lines(examples, "examples"),
                       overwrite=overwrite, console=err)
        if res is None:
            err.print(f"[yellow]{NOTHING_TO_UNLEARN}[/yellow]: the judge ({judge}) called none of the answers to the "
                      f"{len(rows)} prompts bad; nothing was written")
            return
        out.print(collect_table(res.summary))
        err.print(f"[green]Collected[/green]: {res.folder} (forget.jsonl, retain.jsonl, normal.jsonl, collect.json)")

    @app.command()
    @friendly
    def forget(
        model: str = MODEL,
        prompts: Path = PROMPTS,
        overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides for the run, e.g. train.max_steps=30."),
        out_dir: Path = typer.Option(Path("runs/forget"), "--out", help="Folder for the data, the run and the report."),
        judge: str = JUDGE,
        samples: int = SAMPLES,
        own_answers: bool = OWN_ANSWERS,
        judge_strings: Optional[Path] = JUDGE_STRINGS,
        examples: Optional[Path] = EXAMPLES,
        test_prompts: Optional[Path] = typer.Option(None, "--test-prompts", help="Unseen prompts, judged in the evaluation."),
        dataset: Optional[str] = DATASET,
        prompt_field: Optional[str] = PROMPT_FIELD,
        full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
        target: float = typer.Option(0.05, "--target", help="Stop once the held-out forget rate is at most this."),
        max_new_tokens: int = MAX_NEW_TOKENS,
        template: Optional[str] = TEMPLATE,
        bank: Optional[Path] = BANK,
        seed: int = SEED,
        overwrite: bool = OVERWRITE,
    ) -> None:
        """Collect, unlearn until the held-out prompts are forgotten with utility kept, evaluate, report.
        Exit status 1 when no model is handed back (no evaluation kept utility)."""
        from unlearn.forgetting.run import forget as forget_
        from unlearn.report.terminal import eval_table

        s = _settings(judge, samples, judge_strings, max_new_tokens, template, bank, seed, own_answers)
        res = forget_(model, prompts, out=out_dir, judge=judge, samples=samples, lora=not full, target=target,
                      test_prompts=test_prompts, examples=_lines(examples, "examples"), overrides=overrides or [],
                      overwrite=overwrite, console=err, settings=s, dataset=dataset, prompt_field=prompt_field)
        if res.nothing_to_unlearn:
            return
        out.print(eval_table(res.metrics))
        colour = "green" if res.met else "yellow"
        err.print(f"[{colour}]{res.message}[/{colour}]", soft_wrap=True)
        err.print(f"Model: {res.model or '(none)'}\nReport: {res.report}\nData: {res.out / 'data'}\n"
                  f"Config: {res.out / 'forget.yaml'} (unlearn run it again)", soft_wrap=True)
        if res.model is None:
            raise typer.Exit(1)
