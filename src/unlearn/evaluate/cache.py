"""Outputs kept on disk: what the ORIGINAL model said, reused by every later eval, compare and audit
of the same model on the same prompts and settings.

    cache_root()              $UNLEARN_CACHE/outputs (unlearn.models.load.cache_dir decides the base)
    model_fingerprint(name)   a content hash of a model (its files), or None: "do not cache"
    OutputCache               get/put of JSON values by key; a bad entry is a miss, never trusted

An entry is one file ROOT/KEY.json holding {"key": KEY, "value": VALUE, "sha256": sha256(VALUE)}.
It is written atomically (temp file in the same folder, fsync, rename), so a reader sees a whole
entry or none; a file that is not valid JSON, names another key or whose value does not hash to its
sha256 (a torn or edited file) is removed and reported as a miss, so the caller rebuilds it.
The key holds everything the value depends on; a change in any part is another key, so a stale
entry is never found, only left behind (entries are small: text and a few floats per prompt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from unlearn.errors import UnlearnError
from unlearn.files import write_text_atomic


def cache_root() -> Path:
    """Where cached outputs live: $UNLEARN_OUTPUT_CACHE if set (the test suite points it at a
    temporary folder, so tests neither read a user's entries nor leave theirs behind), else
    $UNLEARN_CACHE/outputs (else ~/.cache/unlearn/outputs)."""
    if os.environ.get("UNLEARN_OUTPUT_CACHE"):
        return Path(os.environ["UNLEARN_OUTPUT_CACHE"]).expanduser()
    from unlearn.models.load import cache_dir  # lazy: models imports torch

    return cache_dir() / "outputs"


# --------------------------------------------------------------------------------------------
# Model fingerprints

# (resolved path, size, mtime, ctime, inode) -> sha256 of the file: a model is read once per
# process, and a file rewritten or replaced (another size, time stamp or inode) is read again.
_FILE_HASHES: dict[tuple[str, int, int, int, int], str] = {}
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed, memoised by (path, size, mtime, ctime, inode)."""
    real = path.resolve()  # a hub snapshot's files are symlinks to blobs
    st = real.stat()
    memo = (str(real), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the name and content hash of every file at the top of a model folder: config,
    generation config, weights, adapter, tokenizer files (the tokenizer is loaded from the same
    folder, so its identity is covered) and any model code. Hidden files are left out."""
    h = hashlib.sha256(b"unlearn-model-folder-v1\n")
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        h.update(f"{p.name}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def hub_snapshot(repo_id: str, revision: Optional[str]) -> Optional[Path]:
    """The local snapshot folder of a hub model in huggingface_hub's cache, or None if not there.
    Looked up offline: only what is on disk is hashed, never downloaded."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, revision=revision, local_files_only=True))
    except Exception:  # not cached, a bad id, or no huggingface_hub: then the model is not cached
        return None


def model_fingerprint(name_or_path: str, revision: Optional[str] = None) -> Optional[str]:
    """A content hash of the model `name_or_path` names, as unlearn.models.load_model resolves it.

    - tiny-random-* aliases: built in code from a fixed seed, so the alias and unlearn's version.
    - other aliases (smollm2-135m): the folder it is converted into (converted first if needed).
    - a local folder: every file at its top (folder_fingerprint); for a LoRA adapter folder, also
      the fingerprint of the base model its adapter_config.json names.
    - a hub id: the local snapshot in huggingface_hub's cache (for `revision`), hashed like a
      folder. None when there is no local snapshot, or a file cannot be read: None means "do not
      cache" (load_model may download a snapshot whose content is not known in advance).

    UnlearnError for a name that resolve_name refuses (a missing folder).
    """
    from unlearn.models.load import ALIASES, resolve_name
    from unlearn.version import __version__

    kind, where = resolve_name(name_or_path)
    try:
        if kind == "alias":
            resolved = ALIASES[where]()
            if not isinstance(resolved, Path):  # tiny-random-*: a kind name, built in code
                return hashlib.sha256(f"alias\0{where}\0unlearn {__version__}".encode()).hexdigest()
            return folder_fingerprint(resolved)
        folder = where if kind == "local" else hub_snapshot(where, revision)
        if folder is None:
            return None
        fp = folder_fingerprint(folder)
        if (folder / "adapter_config.json").exists():
            base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
            base_fp = model_fingerprint(base, revision) if isinstance(base, str) and base else None
            if base_fp is None:
                return None
            fp = hashlib.sha256(f"adapter\0{fp}\0base\0{base_fp}".encode()).hexdigest()
        return fp
    except (OSError, ValueError):  # unreadable file or adapter config: do not cache, let loading say why
        return None


# --------------------------------------------------------------------------------------------
# The cache

KEY_RE = re.compile(r"^[0-9a-f]{16,128}$")


def value_sha256(value: Any) -> str:
    """sha256 of a value's canonical JSON (sorted keys, no spaces): what an entry's "sha256" holds."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class OutputCache:
    """JSON values on disk by key. Disabled (enabled=False), it never reads or writes anything.

    get() trusts nothing it reads: an entry counts only if it is a JSON object with exactly "key",
    "value" and "sha256", names the key asked for, and its value hashes to its sha256. Anything else
    is removed and reported as a miss. put() is atomic, and a failed write (full disk, read-only
    folder) is skipped: the cache only saves time, it never fails an evaluation.
    """

    def __init__(self, root: Optional[Path] = None, enabled: bool = True):
        self.root = Path(root) if root is not None else cache_root()
        self.enabled = enabled

    @staticmethod
    def key(*parts: Any) -> str:
        """sha256 of the parts' JSON (sorted keys; str() for anything JSON does not know)."""
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise UnlearnError(f"output cache: bad key {key!r} (expected lower-case hex, from OutputCache.key)")
        return self.root / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The value stored under `key`, or None (a miss, a disabled cache, or a bad entry, removed)."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:  # unreadable (permissions, a folder in its place): a miss, left alone
            return None
        try:
            entry = json.loads(blob)
            ok = (
                isinstance(entry, dict) and set(entry) == {"key", "value", "sha256"}
                and entry["key"] == key and entry["sha256"] == value_sha256(entry["value"])
            )
        except (ValueError, TypeError, RecursionError):  # not UTF-8, not JSON, torn
            ok = False
        if not ok:
            try:
                path.unlink()
            except OSError:
                pass
            return None
        return entry["value"]

    def put(self, key: str, value: Any) -> None:
        """Store `value` (JSON-serialisable) under `key`, replacing any entry there, atomically."""
        if not self.enabled:
            return
        path = self.path(key)
        text = json.dumps({"key": key, "value": value, "sha256": value_sha256(value)})
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# A model's outputs, as the cache keeps them


@dataclass
class ModelOutputs:
    """What one model said on every set, and the NLL it gives the targets."""

    label: str  # "original" or "unlearned"
    model: str
    outputs: dict[str, list[str]] = field(default_factory=dict)
    nll: dict[str, list[float]] = field(default_factory=dict)
    fluency_nll: dict[str, list[Optional[float]]] = field(default_factory=dict)  # under the original
    seconds: float = 0.0
    key: str = ""  # identifies the sets and settings the outputs belong to


def _numbers(values: Any, n: int, nullable: bool) -> bool:
    return isinstance(values, list) and len(values) == n and all(
        (v is None and nullable) or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
    )


def outputs_from_json(value: Any, sizes: dict[str, int], nll_roles: set[str], key: str) -> Optional[ModelOutputs]:
    """A cached ModelOutputs, or None unless it fits: the same sets key, an output (text) per prompt
    of every set in `sizes` (role -> number of prompts), a number per prompt for the target NLLs of
    the sets in `nll_roles` and a number or None for the fluency of every set. A well-formed entry
    of another shape is a miss, not an error."""
    names = {f.name for f in dataclasses.fields(ModelOutputs)}
    if not isinstance(value, dict) or set(value) != names or value.get("key") != key:
        return None
    outputs, nll, fluency = value["outputs"], value["nll"], value["fluency_nll"]
    if not (isinstance(outputs, dict) and isinstance(nll, dict) and isinstance(fluency, dict)):
        return None
    if set(outputs) != set(sizes) or set(fluency) != set(sizes) or set(nll) != set(nll_roles):
        return None
    for role, n in sizes.items():
        if not (isinstance(outputs[role], list) and len(outputs[role]) == n and all(isinstance(o, str) for o in outputs[role])):
            return None
        if not _numbers(fluency[role], n, nullable=True) or (role in nll_roles and not _numbers(nll[role], n, nullable=False)):
            return None
    if not isinstance(value["seconds"], (int, float)) or not isinstance(value["label"], str) or not isinstance(value["model"], str):
        return None
    return ModelOutputs(**value)


def fluency_from_json(value: Any, sizes: dict[str, int]) -> Optional[dict[str, list[Optional[float]]]]:
    """Cached fluency NLLs (role -> a number or None per output) of the sets in `sizes`, or None."""
    if not isinstance(value, dict) or set(value) != set(sizes):
        return None
    return value if all(_numbers(value[r], n, nullable=True) for r, n in sizes.items()) else None


def environment(device: str) -> list[str]:
    """What else outputs depend on besides the model, the prompts and the decoding: the device (CPU
    and GPU outputs differ; the GPU's name) and the versions of unlearn, torch and transformers.
    Part of every cache key."""
    import torch
    import transformers

    from unlearn.version import __version__

    where = f"cuda {torch.cuda.get_device_name()}" if device == "cuda" else device
    return [where, __version__, torch.__version__, transformers.__version__]
