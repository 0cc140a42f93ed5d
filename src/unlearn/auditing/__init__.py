"""`unlearn audit`: is it really gone? Attacks that try to bring the forgotten outputs back.

    registry.py    the attack registry (register_attack): name, kind, source, applies()
    attacks/       the attacks, found by the registry: prompt (template, jailbreak, paraphrase),
                   weights (quantize, bitsandbytes), relearn (relearn, benign), membership
    rewrites.py    the jailbreak-style rewrites (register_rewrite)
    quantize.py    round-to-nearest per-group quantisation; bitsandbytes loading
    membership.py  LOSS, zlib, Min-K%, Min-K%++ scores and their AUC
    context.py     the audit's sets, batched generation through the output cache, scoring
    run.py         run_audit: both models, every attack -> audit.json's content
    summary.py     rows, recovered examples and the headline (the worst recovered rate)
"""

from unlearn.discovery import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "registry": "AttackSpec Trial available_attacks get_attack register_attack",
    "run": "run_audit selected_attacks",
    "rewrites": "register_rewrite rewrites",
})
