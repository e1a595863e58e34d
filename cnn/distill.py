"""Knowledge distillation: a trained model (the teacher) passes its soft answers on to the one being trained.

    python -m train --data raw-img --teacher runs/big/model --distill-weight 0.5 --distill-temperature 2

The teacher is any model folder or Hub repo, loaded from safetensors exactly as the app loads one: typically a
larger from-scratch network trained where compute allows (a GPU), distilled into a small one that serves fast on
a CPU. It sees the same augmented batch as the student, at its own input size and normalisation, and the
student's loss on the labelled photos becomes (1 - weight) · cross-entropy to the labels + weight · T² · KL(teacher
‖ student) at temperature T (Hinton et al., 2015: the T² keeps the gradient's size independent of T).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import hub
from .data import normalize


@dataclass
class Teacher:
    """A frozen model and what it needs to read a batch: its side, its normalisation, and for each class being
    trained the index of that class among the teacher's own outputs (it may know more classes, in any order),
    kept on the teacher's device so that no step copies it there."""
    model: nn.Module
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    order: torch.Tensor
    source: str

    @torch.no_grad()
    def logits(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """The teacher's logits, in the student's class order, for an augmented batch of floats in [0, 1]."""
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = normalize(x, self.mean, self.std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)[:, self.order]


def load_teacher(model_id: str, classes: list[str], device: torch.device, channels_last: bool = False) -> Teacher:
    """Load a teacher (a model folder, a run folder or a Hub repo id) for a run on `classes`; a teacher that does
    not know one of them is refused before training (hub.ModelLoadError or ValueError, with the reason)."""
    folder, source = hub.resolve(model_id)
    model, config = hub.load_pretrained(folder)
    labels = list(config["label_names"])
    missing = [name for name in classes if name not in labels]
    if missing:
        raise ValueError(f"the teacher ({source}) does not know the class(es) {', '.join(missing)}; "
                         f"it knows {', '.join(labels)}")
    pre = config.get("pretrained_cfg", {})
    model.requires_grad_(False)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Teacher(model.eval(), int(pre["input_size"][-1]), tuple(pre["mean"]), tuple(pre["std"]),
                   torch.tensor([labels.index(name) for name in classes], device=device), source)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over the batch."""
    t = temperature
    return F.kl_div((student_logits.float() / t).log_softmax(1), (teacher_logits.float() / t).log_softmax(1),
                    reduction="batchmean", log_target=True) * t * t


def check(weight: float, temperature: float) -> None:
    """Refuse a weight outside [0, 1] or a temperature that is not positive (before any photo is read)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight must be between 0 and 1, got {weight}")
    if temperature <= 0:
        raise ValueError(f"distill_temperature must be positive, got {temperature}")
