"""The `unlearn` command line. Wires the modules together; holds no logic of its own."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from unlearn.comparison.methods import DEFAULT_METHODS
from unlearn.errors import RunInterrupted, UnlearnError

app = typer.Typer(
    help="Make a language model stop saying things, from examples of what it must stop saying.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

OVERRIDES_HELP = "Config overrides as section.key=value, e.g. train.lr=1e-5 objective.kl=2."


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RunInterrupted as e:
            if os.environ.get("RANK", "0") == "0":  # every process stops; one says so
                err.print(f"[yellow]interrupted:[/yellow] {e}", soft_wrap=True)
            raise typer.Exit(128 + e.signum) from None
        except UnlearnError as e:
            # Escaped: a message's own brackets ("pip install 'unlearn[lmeval]'") are text, not markup.
            err.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@_friendly
def run(
    config: Path = typer.Argument(..., help="YAML config file, or a packaged recipe's name (unlearn recipes)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output_dir."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in output_dir."),
) -> None:
    """Unlearn: train with the configured objective and write OUTPUT_DIR."""
    from unlearn.api import run as run_
    from unlearn.distributed import end_processes

    run_(config, overrides or [], overwrite=overwrite, resume=resume, console=err)
    end_processes()


@app.command()
@_friendly
def finetune(
    config: Path = typer.Argument(..., help="YAML config file, or a packaged recipe's name (unlearn recipes)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output_dir."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in output_dir."),
) -> None:
    """Supervised fine-tuning (NLL) on the forget and retain data: the same loop and outputs."""
    from unlearn.api import finetune as finetune_
    from unlearn.distributed import end_processes

    finetune_(config, overrides or [], overwrite=overwrite, resume=resume, console=err)
    end_processes()


@app.command("eval")
@_friendly
def eval_(
    config: Path = typer.Argument(..., help="YAML config file (the run's, or OUTPUT_DIR/config.yaml)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    allow_unfinished: bool = typer.Option(
        False, "--allow-unfinished", help="Evaluate even if OUTPUT_DIR/run.json says the run did not finish."
    ),
    best: bool = typer.Option(
        False, "--best", help="Evaluate OUTPUT_DIR/best/model (train.keep_best); report in OUTPUT_DIR/best/eval."
    ),
    model: Optional[Path] = typer.Option(None, "--model", help="Evaluate this model folder instead of OUTPUT_DIR/model."),
) -> None:
    """Evaluate OUTPUT_DIR/model against the original model; write OUTPUT_DIR/eval/report.html."""
    from unlearn.api import run_eval
    from unlearn.config import load_config
    from unlearn.report.terminal import eval_table

    cfg = load_config(config, overrides or [])
    out_dir = Path(cfg.output_dir).expanduser().resolve()
    model_dir = model if model is not None else (out_dir / "best" / "model" if best else None)
    report_dir = out_dir / "best" / "eval" if best and model is None else None
    result = run_eval(cfg, model_dir=model_dir, allow_unfinished=allow_unfinished, report_dir=report_dir, console=err)
    out.print(eval_table(result.metrics))
    where = report_dir or out_dir / "eval"
    err.print(f"[green]Report[/green]: {where / 'report.html'} (metrics.json, samples.jsonl, report.md beside it)")


@app.command("audit")
@_friendly
def audit_(
    config: Optional[Path] = typer.Argument(None, help="YAML config file (the run's, or OUTPUT_DIR/config.yaml)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    allow_unfinished: bool = typer.Option(
        False, "--allow-unfinished", help="Audit even if OUTPUT_DIR/run.json says the run did not finish."
    ),
    model: Optional[Path] = typer.Option(None, "--model", help="Audit this model folder instead of OUTPUT_DIR/model."),
    list_: bool = typer.Option(False, "--list", help="List the attacks and jailbreak rewrites, then exit."),
) -> None:
    """Is it really gone? Attack OUTPUT_DIR/model (and the original model, as the reference) with
    other prompt formats, jailbreak rewrites, quantised weights, relearning and membership inference;
    write OUTPUT_DIR/audit/report.html."""
    if list_:
        from unlearn.report.terminal import attacks_table

        out.print(attacks_table())
        return
    if config is None:
        raise UnlearnError("unlearn audit: give a CONFIG (or --list)")
    from unlearn.api import audit as audit_run
    from unlearn.report.terminal import audit_table

    data = audit_run(config, overrides or [], model_dir=model, allow_unfinished=allow_unfinished, console=err)
    out.print(audit_table(data))
    where = Path(data["run"]["output_dir"]) / "audit"
    err.print(f"[green]Audit[/green]: {where / 'report.html'} (audit.json, report.md beside it)")


from unlearn.cli_forget import add_commands  # noqa: E402  (after _friendly, which they use)

add_commands(app, _friendly, out, err)


@app.command()
@_friendly
def demo(
    quick: bool = typer.Option(False, "--quick", help="A smaller run for smoke tests (same scenario, less budget)."),
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the data, the run and the report."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo's folder."),
) -> None:
    """Teach SmolLM2-135M fictitious people's facts, unlearn a quarter of them, prove it (offline)."""
    from unlearn.demo import run_demo
    from unlearn.report.terminal import demo_table

    res = run_demo(out_dir, quick=quick, overwrite=overwrite, console=err)
    out.print(demo_table(res.summary, quick))
    s = res.seconds
    teach = "from the cache" if res.teach_cached else f"{s['teach']:.0f} s"
    out.print(f"time: {s['total'] / 60:.1f} min (teach {teach}, unlearn {s['unlearn']:.0f} s, eval {s['eval']:.0f} s)")
    out.print(f"Report: {res.report}")


@app.command("compare")
@_friendly
def compare_(
    config: Path = typer.Argument(..., help="YAML config file, or a packaged recipe's name (unlearn recipes)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    methods: str = typer.Option(
        ",".join(DEFAULT_METHODS), "--methods",
        help="Comma-separated objective presets to compare (unlearn terms lists them).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT_DIR/compare."),
    audit: bool = typer.Option(
        False, "--audit", help="Also attack each method's model (unlearn audit): a 'worst recovered' column."
    ),
) -> None:
    """Run and evaluate several methods with the same data, steps, seed and evaluation; write
    OUTPUT_DIR/compare/ (compare.html, compare.md, compare.json, tradeoff.png). Exit status 1 when a
    method failed (the comparison is still written, with the failure in its row)."""
    from unlearn.comparison import compare as compare__
    from unlearn.report.terminal import compare_table

    result = compare__(config, overrides or [], methods=methods, overwrite=overwrite, audit=audit, console=err)
    out.print(compare_table(result.data))
    for name, path in result.files.items():
        err.print(f"[green]{name}[/green]: {path}")
    failed = [m for m, r in result.data["runs"].items() if r["status"] != "done"]
    for m in failed:
        r = result.data["runs"][m]
        err.print(f"[red]{m} failed[/red] ({r.get('failed_phase')}): {r.get('error')} (log: {r['log']})",
                  soft_wrap=True)
    if failed:  # the comparison is written, but a script must be able to tell that it is incomplete
        err.print(f"[red]{len(failed)} of {len(result.data['runs'])} methods failed[/red]: exit status 1")
        raise typer.Exit(1)


@app.command("config")
@_friendly
def show_config(
    config: Optional[Path] = typer.Argument(None, help="YAML config file to resolve and print."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    keys: bool = typer.Option(False, "--keys", help="List every config key with its type, default and help."),
    markdown: bool = typer.Option(False, "--markdown", help="With --keys: a Markdown table (the README's)."),
) -> None:
    """Print the resolved config (after overrides and checks), or every key with --keys."""
    from unlearn.config import describe_keys, load_config

    if markdown:
        typer.echo("| key | type | default | what it does |\n|---|---|---|---|")
        for k, t, d, h in describe_keys():
            cells = [f"`{k}`", t, f"`{d}`" if d else "", h]
            typer.echo("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return
    if keys or config is None:
        from rich.table import Table

        table = Table("key", "type", "default", "help", show_lines=False)
        for row in describe_keys():
            table.add_row(*row)
        out.print(table)
        return
    cfg = load_config(config, overrides or [])
    from unlearn.objective import Objective

    cfg.objective = Objective(cfg.objective, where=cfg.origin).to_config()
    typer.echo(cfg.to_yaml(), nl=False)  # raw: rich would wrap long paths and break the YAML


@app.command()
def terms() -> None:
    """List the registered loss terms, their parameters and the objective presets."""
    from rich.table import Table

    from unlearn.objective import available_terms
    from unlearn.objective.presets import PRESETS, preset_names

    table = Table("term", "reads", "reference on", "what it is")
    params = Table("parameter", "type", "default", "what it does")
    for name, t in available_terms().items():
        table.add_row(name, ", ".join(t.segments), ", ".join(t.reference), t.summary)
        for row in t.describe_params():
            params.add_row(*row)
    out.print(table)
    out.print(params)
    presets = Table("preset", "objective")
    for name in preset_names():
        weights = PRESETS[name]
        presets.add_row(name, ", ".join(f"{k}: {v:g}" for k, v in weights.items()))
    out.print(presets)


@app.command()
def datasets() -> None:
    """List the dataset adapters (data.forget.dataset: NAME) and the fields each expects."""
    from rich.table import Table

    from unlearn.data.sources import available_sources, get_source

    table = Table("dataset", "what it gives", "expects", "hub (when no path is set)")
    for name in available_sources():
        fn = get_source(name)
        doc = (fn.__doc__ or "").strip().splitlines()
        table.add_row(name, doc[0] if doc else "", getattr(fn, "schema", ""), getattr(fn, "hub", None) or "(path only)")
    out.print(table)


@app.command()
def benchmarks() -> None:
    """List the benchmarks `eval.benchmarks` can run, their parameters and the metrics they report."""
    from rich.table import Table

    from unlearn.benchmarks.registry import available_benchmarks
    from unlearn.benchmarks.run import describe_params

    for name, b in available_benchmarks().items():
        out.print(f"[bold]{name}[/bold]: {b.description} ({b.source})"
                  + (f" [dim]needs: pip install 'unlearn\\[{b.extra}]'[/dim]" if b.extra else ""))
        params = Table("parameter", "default", "what it does")
        for row in describe_params(b):
            params.add_row(*row)
        metrics = Table("metric", "better", "what it is")
        for m in b.metrics:
            metrics.add_row(m.name, m.better or "", m.description)
        out.print(params)
        out.print(metrics)


@app.command()
def recipes() -> None:
    """List the packaged recipes; run one with `unlearn run NAME`."""
    from rich.table import Table

    from unlearn.recipes import available_recipes

    table = Table("recipe", "what it does", "command")
    for r in available_recipes():
        table.add_row(r.name, r.summary, r.command)
    out.print(table)


data_app = typer.Typer(help="Built-in data sets: write them out to see the format.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("profiles")
@_friendly
def data_profiles(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write one JSONL file per split into."),
    people: int = typer.Option(12, help="Number of fictitious people (a quarter are the forget set)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same files."),
) -> None:
    """Fictitious people's private facts (the demo's data): forget/retain splits, held-out
    paraphrases, general questions and a pool of unrelated answers."""
    from unlearn.data.sources.profiles import ProfileSpec, write_profiles

    written = write_profiles(out_dir, ProfileSpec(people=people, seed=seed))
    for split, path in written.items():
        n = sum(1 for _ in open(path))
        out.print(f"{split:18s} {n:4d} examples  {path}")


def main() -> None:
    # Hubs may be unreachable; never let a progress bar or a telemetry call of a library hang a run.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from unlearn.memory import keep_freed_memory

    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
