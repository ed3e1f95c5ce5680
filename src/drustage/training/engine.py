"""The optimisation loop both trainers share, after torchvision's detection references
(``train_one_epoch`` / ``evaluate``): one guarded optimiser step, one pass over a detection
loader, the validation summary, and the best weights seen so far."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from drustage.data.detection import DetectionSet
from drustage.evaluation.detection import combined_detection_metrics, evaluate_detector_on
from drustage.inference.device import mixed_precision
from drustage.stages import BONES

__all__ = ["BestWeights", "DetectorPhase", "evaluate", "optimisation_step", "train_one_epoch", "training_precision"]


def training_precision(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast for a training step when ``enabled`` (a config's ``mixed_precision``): on CUDA, and
    on CPUs with native bfloat16; full precision otherwise."""
    return mixed_precision(device, on_cpu=True) if enabled else contextlib.nullcontext()


def optimisation_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                      where: str, clip: tuple[Sequence[torch.nn.Parameter], float] | None = None) -> None:
    """Back-propagate ``loss`` (scaled under fp16) and step; ``clip`` (parameters, max norm) clips
    the true gradients. A non-finite loss stops training with ``where`` in the message."""
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss.item()} at {where}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(clip[0], clip[1])
    scaler.step(optimizer)
    scaler.update()


@dataclass
class DetectorPhase:
    """What one phase of a detector schedule optimises, and how."""

    name: str
    losses: tuple[str, ...]  # the loss terms summed into the phase's loss
    parameters: list[torch.nn.Parameter]  # the ones that train (and are clipped)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    max_grad_norm: float = 10.0


def train_one_epoch(network: torch.nn.Module, phase: DetectorPhase, loader: torch.utils.data.DataLoader,
                    device: torch.device, scaler: torch.amp.GradScaler, limit: int, first_iteration: int = 0,
                    shard: Callable[[int], slice] = lambda n: slice(None),
                    reduced_precision: bool = True) -> Iterator[float]:
    """One pass over ``loader``, at most ``limit`` steps, yielding each step's loss after its
    optimiser step (the caller validates between steps). ``shard`` picks this process's share of
    a batch every process drew alike; ``reduced_precision`` runs the steps under
    ``training_precision``."""
    for step, (images, targets) in enumerate(loader):
        network.train()
        mine = shard(len(images))
        images = [image.to(device, non_blocking=True) for image in images[mine]]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets[mine]]
        with training_precision(device, reduced_precision):
            losses = network(images, targets)
            loss = sum(losses[k] for k in phase.losses)
        where = f"detector {phase.name} iteration {first_iteration + step + 1}"
        optimisation_step(loss, phase.optimizer, scaler, where, clip=(phase.parameters, phase.max_grad_norm))
        phase.scheduler.step()
        yield float(loss.item())
        if step + 1 >= limit:
            return


def evaluate(model: torch.nn.Module, val_sets: Sequence[DetectionSet]) -> dict[str, float]:
    """Per-bone IoU and detection rate over the validation films of all datasets, each film
    counted once. (Averaged per dataset instead, the two validation films of a 19-film box file
    weighed as much as 80 phantoms: one film's box could choose the checkpoint.)"""
    pooled = combined_detection_metrics([evaluate_detector_on(model, s) for s in val_sets])
    return {f"val_{bone}_{name}": float(getattr(pooled.bone(bone), key))
            for bone in BONES for name, key in (("iou", "mean_iou"), ("rate", "detection_rate_iou50"))}


@dataclass
class BestWeights:
    """The weights (a CPU copy) of the best score offered so far; scores are compared as given,
    so a tuple breaks ties."""

    score: tuple | float | None = None
    step: int = 0
    state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def offer(self, score: tuple | float, step: int, model: torch.nn.Module) -> bool:
        if self.score is not None and not score > self.score:
            return False
        self.score, self.step = score, step
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return True

    def restore(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.state)
