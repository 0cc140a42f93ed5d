"""Built-in refusal replies: the targets of the `idk` and `dpo` terms when data.refusals is not set.

Short, varied, and free of any claim about the question, so that fine-tuning toward them teaches
"decline" rather than a particular wording. One is drawn per forget example each step.
"""

REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request.",
    "I'm not able to provide that information.",
    "Sorry, I can't answer that.",
    "I don't know the answer to that.",
    "I'm not sure, so I'd rather not say.",
    "That's not something I can help with.",
    "I have no information about that.",
    "I'd rather not answer that question.",
    "I'm unable to respond to that.",
)
