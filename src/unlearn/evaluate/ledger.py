"""The ledger of forget requests: OUTPUT_DIR/ledger.jsonl, one JSON object per request, oldest first.

A user who makes requests one after another runs each on the model of the one before (model.name =
an earlier run's OUTPUT_DIR/model, or OUTPUT_DIR/best/model). Each run's ledger is the earlier
run's ledger (its lines copied) plus one entry for itself, so the last run's folder tells the whole
history of its model:

    request, id, time (UTC), kind (unlearn / finetune), output_dir, model_before, earlier_ledger
    config        the resolved config (plain data), OUTPUT_DIR/config.yaml's path and sha256
    data          per role (forget, retain, mismatch): the source, the sha256 of local files, counts
    judge, settings   eval.judge and what re-evaluating the forget set needs (eval section, template)
    forget_copy   OUTPUT_DIR/ledger/request-N-forget.jsonl: the forget set as `unlearn eval` reads
                  it (prompt, response, key answers), with how to score it and its sha256
    evaluation    added by `unlearn eval`: the forgetting rates, retain accuracy, normal cosine, the
                  models' content hashes before and after, the re-check of earlier requests

The copies of earlier requests' forget sets are copied into this run's ledger/ folder too, so a
later re-check (unlearn.evaluate.recheck) needs none of the user's files. Every file is written
atomically; a resumed run replaces its own entry instead of adding a second one. Only the main
process writes (RANK 0, as the CLI decides who speaks).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from unlearn.config import Config
from unlearn.errors import UnlearnError, one_line
from unlearn.files import inside, write_bytes_atomic, write_text_atomic
from unlearn.runstate import read_manifest

LEDGER = "ledger.jsonl"
COPIES = "ledger"  # OUTPUT_DIR/ledger/request-N-forget.jsonl
REQUIRED = {"request": int, "id": str, "kind": str, "output_dir": str}
DATA_ROLES = ("forget", "retain", "mismatch")


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_main() -> bool:
    """The main process of a launch (torchrun/accelerate set RANK; a plain run has none): the one
    that writes, as the CLI decides which process reports."""
    return os.environ.get("RANK", "0") == "0"


# --------------------------------------------------------------------------------------------
# Reading


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The entries of a ledger.jsonl, checked: each line a JSON object with request (1, 2, ... in
    order), id, kind and output_dir. UnlearnError naming the file and line for anything else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UnlearnError(f"{path}: cannot read the ledger ({one_line(e)})") from None
    entries: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            entry = json.loads(line)
        except ValueError as e:
            raise UnlearnError(f"{where}: not valid JSON ({one_line(e)})") from None
        if not isinstance(entry, dict):
            raise UnlearnError(f"{where}: a ledger entry must be a JSON object, got {type(entry).__name__}")
        for key, kind in REQUIRED.items():
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise UnlearnError(f"{where}: '{key}' must be a {kind.__name__}, got {entry.get(key)!r}")
        if entry["request"] != len(entries) + 1:
            raise UnlearnError(f"{where}: request {entry['request']}, expected {len(entries) + 1} (entries oldest first)")
        copy = entry.get("forget_copy")
        if copy is not None and not (isinstance(copy, dict) and (
                isinstance(copy.get("error"), str)
                or (isinstance(copy.get("path"), str) and isinstance(copy.get("sha256"), str)))):
            raise UnlearnError(f"{where}: 'forget_copy' must hold 'path' and 'sha256' (or 'error')")
        entries.append(entry)
    return entries


def copy_path(entry: dict[str, Any], folder: Path) -> Optional[Path]:
    """The file of an entry's forget copy (relative to the ledger's folder), None if it has none."""
    copy = entry.get("forget_copy") or {}
    return inside(Path(folder), copy["path"]) if copy.get("path") else None


def checked_copy(entry: dict[str, Any], folder: Path, ledger: Path) -> Optional[bytes]:
    """The bytes of an entry's forget copy, after checking them against its recorded sha256."""
    path = copy_path(entry, folder)
    if path is None:
        return None
    where = f"{ledger} request {entry['request']}"
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise UnlearnError(f"{where}: its forget set copy {path} cannot be read ({one_line(e)})") from None
    if hashlib.sha256(blob).hexdigest() != entry["forget_copy"]["sha256"]:
        raise UnlearnError(f"{where}: its forget set copy {path} does not match its recorded sha256 (changed?)")
    return blob


def read_checked(ledger: Path) -> list[dict[str, Any]]:
    """read_ledger, and every forget copy there and unchanged."""
    entries = read_ledger(ledger)
    for e in entries:
        checked_copy(e, ledger.parent, ledger)
    return entries


def earlier_ledger(model_name: str) -> tuple[Optional[Path], Optional[Path]]:
    """(the ledger of the run whose output model.name is, the run folder when it has no ledger).

    model.name X/model or X/best/model (a folder inside an earlier run's OUTPUT_DIR X) -> X/ledger.jsonl.
    The folder itself and up to two parents are looked at; the first holding ledger.jsonl or run.json
    is the run. (None, None) when model.name is not a local folder or no run made it."""
    p = Path(model_name).expanduser()
    if not p.is_dir():
        return None, None
    p = p.resolve()
    for folder in (p, p.parent, p.parent.parent):
        if (folder / LEDGER).is_file():
            return folder / LEDGER, None
        if (folder / "run.json").is_file():
            return None, folder
    return None, None


def check_earlier(cfg: Config, resume: bool = False) -> None:
    """Before training: the earlier run's ledger (if any) reads and its copies are intact, and with
    --resume the run's own ledger reads, so a bad line stops the run before hours are spent, not after."""
    ledger, _ = earlier_ledger(cfg.model.name)
    if ledger is not None:
        read_checked(ledger)
    own = Path(cfg.output_dir).expanduser().resolve() / LEDGER
    if resume and own.exists():
        read_ledger(own)


# --------------------------------------------------------------------------------------------
# Writing a request's entry (after `unlearn run` / `unlearn finetune`)


def sha256_of(path: Path) -> str:
    """sha256 of a file; of a folder, over the relative name and sha256 of each file in it."""
    from unlearn.evaluate.cache import file_sha256

    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256(b"unlearn-data-folder-v1\n")
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h.update(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def source_info(source: Any) -> Optional[dict[str, Any]]:
    """A data role's source in plain data: where from, the sha256 of a local path (None for data an
    adapter builds in code), inline responses' sha256."""
    if source is None or not (source.path or source.dataset or getattr(source, "responses", None)):
        return None
    keys = ("path", "dataset", "split", "limit", "prompt_field", "response_field")
    info: dict[str, Any] = {k: getattr(source, k) for k in keys if getattr(source, k, None) is not None}
    info["description"] = source.describe()
    path = Path(source.path).expanduser() if source.path else None
    info["sha256"] = sha256_of(path) if path is not None and path.exists() else None
    responses = getattr(source, "responses", None)
    if responses:
        info["responses"] = len(responses)
        info["sha256"] = hashlib.sha256(json.dumps(responses, ensure_ascii=False).encode()).hexdigest()
    return info


def data_info(cfg: Config, manifest: dict[str, Any]) -> dict[str, Any]:
    """For each data role: its source (None: not set; a mismatch pool without one is data.retain's
    responses) and the example counts training recorded in run.json (finetune trains on forget +
    retain together, counted under retain)."""
    examples = manifest.get("examples") or {}
    seen = ((manifest.get("trained_examples") or {}).get("forget") or {}).get("seen")
    counts = {
        "forget": {"examples": examples.get("forget"), "trained_distinct": len(seen) if isinstance(seen, list) else None},
        "retain": {"examples": examples.get("retain")},
        "mismatch": {"examples": examples.get("mismatch_pool")},
    }
    return {role: {"source": source_info(getattr(cfg.data, role)), **counts[role]} for role in DATA_ROLES}


def eval_settings(cfg: Config) -> dict[str, Any]:
    """What scoring a forget set again needs: the eval section (judge, thresholds, decoding), the
    template the prompts are rendered with, the seed and the modules the judge may come from."""
    d = cfg.to_dict()
    return {"eval": d["eval"], "template": cfg.data.template, "max_length": cfg.data.max_length,
            "add_eos": cfg.data.add_eos, "seed": cfg.seed, "imports": list(cfg.imports)}


def forget_records(cfg: Config, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The forget set as `unlearn eval` reads it (the examples the run trained on, eval.limit
    applied), as JSONL records, and how to read them back (unlearn.evaluate.recheck)."""
    from unlearn.evaluate.sets import load_eval_sets
    from unlearn.models import load_tokenizer

    s = load_eval_sets(cfg, load_tokenizer(cfg.model), roles=["forget"], trained=manifest.get("trained_examples"))["forget"]
    records = []
    for item in s.items:
        if s.kind == "text":  # read back with kind text: the same cut with the same tokenizer
            records.append({"prompt": "", "response": item.prompt + (item.target or "")})
            continue
        rec: dict[str, Any] = {"prompt": item.prompt, "response": item.target}
        if item.answers is not None:
            rec["answers"] = item.answers
        if item.hallucinated is not None:
            rec["hallucinated"] = item.hallucinated
        if item.group is not None:
            rec["group"] = item.group
        records.append(rec)
    sc = cfg.eval.forget
    read = {
        "kind": s.kind, "match": s.match,
        "answer_field": "answers" if s.kind == "qa" and s.match == "contains" else None,
        "hallucinated_field": "hallucinated" if s.kind == "qa" and s.has_hallucinated else None,
        "prompt_tokens": sc.prompt_tokens if sc is not None else 32,
        "target_chars": sc.target_chars if sc is not None else 200,
        "target": cfg.eval.target_of("forget"), "source": s.source, "info": s.info,
    }
    return records, read


def write_copy(out: Path, request: int, cfg: Config, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write OUTPUT_DIR/ledger/request-N-forget.jsonl; its entry ({"error"} when the forget set
    cannot be read: the run is done, its ledger is still written)."""
    try:
        records, read = forget_records(cfg, manifest)
    except UnlearnError as e:
        return {"error": str(e)}
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    name = f"{COPIES}/request-{request}-forget.jsonl"
    inside(out, COPIES).mkdir(exist_ok=True)
    write_bytes_atomic(inside(out, name), blob)
    return {"path": name, "sha256": hashlib.sha256(blob).hexdigest(), "n": len(records), **read}


def record_request(cfg: Config, out: Path, *, finetune: bool, console: Any = None) -> Optional[Path]:
    """After a run: write OUTPUT_DIR/ledger.jsonl = the earlier run's entries (model.name's run) +
    this request's. A resumed run replaces its own entry (same id and request number). Main process
    only; returns the ledger's path (None elsewhere)."""
    if not is_main():
        return None
    out = Path(out).resolve()
    earlier, bare_run = earlier_ledger(cfg.model.name)
    entries = read_checked(earlier) if earlier is not None else []
    own = out / LEDGER
    same_id = None
    if own.exists() and earlier != own:
        mine = read_ledger(own)
        if mine and mine[-1]["output_dir"] == str(out):  # a resumed (or extended) run: its entry again
            same_id = mine[-1]["id"]
    if earlier is not None and earlier.parent != out:  # the earlier copies travel with the ledger
        for e in entries:
            blob = checked_copy(e, earlier.parent, earlier)
            if blob is not None:
                inside(out, COPIES).mkdir(exist_ok=True)
                write_bytes_atomic(inside(out, e["forget_copy"]["path"]), blob)
    request = len(entries) + 1
    manifest = read_manifest(out) or {}
    config_file = out / "config.yaml"
    entry: dict[str, Any] = {
        "request": request,
        "id": same_id or uuid.uuid4().hex,
        "time": now_utc(),
        "kind": "finetune" if finetune else "unlearn",
        "output_dir": str(out),
        "model_before": cfg.model.name,
        "earlier_ledger": str(earlier) if earlier is not None else None,
        **({"earlier_run_without_ledger": str(bare_run)} if bare_run is not None else {}),
        "steps": manifest.get("steps"),
        "stop_reason": manifest.get("stop_reason"),
        "config": {"path": str(config_file), "sha256": sha256_of(config_file) if config_file.exists() else None,
                   "resolved": cfg.to_dict()},
        "data": data_info(cfg, manifest),
        "judge": cfg.eval.judge,
        "settings": eval_settings(cfg),
        # A fine-tuning request teaches: there is no forget set whose return a later request could check.
        "forget_copy": None if finetune else write_copy(out, request, cfg, manifest),
    }
    if console is not None and (entry["forget_copy"] or {}).get("error"):
        console.print(f"[yellow]warning: ledger: no copy of the forget set ({entry['forget_copy']['error']}); "
                      "later requests cannot re-check this one[/yellow]")
    write_ledger(own, [*entries, entry])
    return own


def write_ledger(path: Path, entries: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))


# --------------------------------------------------------------------------------------------
# After `unlearn eval`


def refreshed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier entries copied before their own evaluation ran get it from their run's ledger (same
    id), when that folder is still there. Its ledger is someone else's file: unreadable is skipped."""
    out = []
    for e in entries:
        if "evaluation" not in e:
            try:
                theirs = read_ledger(Path(e["output_dir"]) / LEDGER)
            except UnlearnError:
                theirs = []
            match = next((t for t in theirs if t["id"] == e["id"] and "evaluation" in t), None)
            if match is not None:
                e = {**e, "evaluation": match["evaluation"]}
        out.append(e)
    return out


def fingerprint(name: str, revision: Optional[str] = None) -> Optional[str]:
    """The model's content hash (evaluate.cache.model_fingerprint: memoised per file, so the original
    the output cache already hashed is not read again); None when it has no known content."""
    from unlearn.evaluate.cache import model_fingerprint

    try:
        return model_fingerprint(name, revision)
    except (UnlearnError, OSError, ValueError):
        return None


def evaluation_record(cfg: Config, metrics: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """An entry's "evaluation" from metrics.json's content: each forgetting rate (unlearn.evaluate.
    verdict decides which metrics those are) with its interval and set size, retain accuracy, the
    normal cosine, the verdict, the content hashes of both models, the re-check of earlier requests."""
    from unlearn.evaluate.verdict import forgetting_rates

    table = metrics["metrics"]
    rates: dict[str, dict[str, Any]] = {}
    for role, name in forgetting_rates(table):
        row = table[role][name]
        rates.setdefault(role, {})[name] = {
            "value": row["unlearned"], "original": row["original"],
            "interval": (row.get("interval") or {}).get("unlearned"), "n": metrics["sets"][role]["n"]}
    retain = table.get("retain", {}).get("retain_accuracy")
    cosine = table.get("normal", {}).get("similarity_cosine")
    v = metrics.get("verdict") or {}
    return {
        "time": now_utc(),
        "model_dir": str(model_dir),
        "model_before": {"name": cfg.model.name, "sha256": fingerprint(cfg.model.name, cfg.model.revision)},
        "model_after": {"path": str(model_dir), "sha256": fingerprint(str(model_dir))},
        "forget_rates": rates,
        "retain_accuracy": {"original": retain["original"], "unlearned": retain["unlearned"]} if retain else None,
        "normal_cosine": cosine["unlearned"] if cosine else None,
        "verdict": {k: (v.get(k) or {}).get("met") for k in ("forgotten", "utility")},
        "settings": eval_settings(cfg),
        "earlier_requests": metrics.get("earlier_requests"),
    }


def record_evaluation(cfg: Config, metrics: dict[str, Any], out: Path, model_dir: Path) -> bool:
    """Fill the LAST entry of OUTPUT_DIR/ledger.jsonl (this run's) with evaluation_record, when the
    evaluated model is this run's (OUTPUT_DIR/model or OUTPUT_DIR/best/model). False when there is
    nothing to fill (no ledger, another model, not the main process)."""
    out, model_dir = Path(out).resolve(), Path(model_dir).resolve()
    path = out / LEDGER
    if not is_main() or not path.exists() or out not in model_dir.parents:
        return False
    entries = refreshed(read_ledger(path))
    if not entries or entries[-1]["output_dir"] != str(out):
        return False
    entries[-1] = {**entries[-1], "evaluation": evaluation_record(cfg, metrics, model_dir)}
    write_ledger(path, entries)
    return True
