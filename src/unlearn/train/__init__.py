"""Training: `unlearn run` and `unlearn finetune`.

    loop.py        train(): setup, the loop, the saved model          (start reading here)
    setup.py       the config resolved into a copy, data, model, engine: one Run value
    step.py        train_step(): one optimisation step, the only one (benchmarks/ call it too)
    checkpoint.py  resumable checkpoints and the resume-compatibility check
    progress.py    train_log.jsonl (train.log_every), the progress bar, the printed plan
    outputs.py     the output folder: checks, the run's input files, expected size
    exits.py       how run.json records a run that does not finish
"""

from unlearn.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from unlearn.train.loop import ForgetNllStop, RunResult, train
from unlearn.train.outputs import check_output_dir, run_inputs
from unlearn.train.setup import DEFAULT_LR_FULL, DEFAULT_LR_LORA, make_optimizer, master_weights, prepare_policy
from unlearn.train.step import StepParts, StepResult, forward_objective, train_step

__all__ = [
    "DEFAULT_LR_FULL", "DEFAULT_LR_LORA", "ForgetNllStop", "RunResult", "StepParts", "StepResult",
    "check_output_dir", "forward_objective", "latest_checkpoint", "load_checkpoint", "make_optimizer", "master_weights",
    "prepare_policy", "run_inputs", "save_checkpoint", "train", "train_step",
]
