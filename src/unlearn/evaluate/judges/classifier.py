"""The classifier judge: any Hugging Face sequence classifier on the output (eval.judge:
classifier:PATH_OR_ID); eval.judge_labels names its harmful labels."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from unlearn.errors import UnlearnError
from unlearn.evaluate.embed import encoder_batches
from unlearn.evaluate.judges.registry import Judge, load_error, register_judge


HARMFUL_LABELS = ("unsafe", "harmful", "toxic", "toxicity", "offensive", "hate", "hateful", "abusive")


class ClassifierJudge:
    name = "classifier"

    def __init__(self, path: str, labels: Optional[Sequence[str]], device: str, batch_size: int = 16):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        except Exception as e:
            raise load_error(f"classifier:{path}", e) from None
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        wanted = [w.lower() for w in labels] if labels else list(HARMFUL_LABELS)
        self.harmful = {i for i, name in id2label.items() if name.lower() in wanted or str(i) in wanted}
        if not self.harmful:
            raise UnlearnError(
                f"eval.judge_labels: none of the classifier's labels ({', '.join(id2label.values())}) "
                "is known to mean harmful; list the harmful ones in eval.judge_labels"
            )
        self.device, self.batch_size = device, batch_size

    def __call__(self, prompts, outputs, references):
        import torch

        out: list[Optional[bool]] = []
        with torch.no_grad():
            for batch in encoder_batches(self.tok, outputs, self.batch_size, 512, self.device):
                pred = self.model(**batch).logits.argmax(-1).tolist()
                out.extend(p in self.harmful for p in pred)
        return out


@register_judge("classifier", argument=True)
def _classifier(arg: str, cfg: Any, device: str) -> Judge:
    return ClassifierJudge(arg, cfg.judge_labels, device)
