"""`unlearn collect` and `unlearn forget`: from "my model says this" to a forgotten behaviour.

    prompts.py     read prompts (text, JSONL, CSV, a dataset adapter) or (prompt, bad answer) pairs
    bank.py        the built-in retain bank (retain_bank.jsonl) and its filter against the forget prompts
    collect.py     collect: the model answers each prompt N times, the judge scores each answer
    hparams.py     the hyper-parameter table: from the model's size and LoRA or full fine-tuning
    run.py         forget: collect, unlearn with a stop rule, evaluate, report
"""
