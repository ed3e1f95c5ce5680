"""The shared optimisation loop: guarded steps, clipping, step limits and the best weights."""

import pytest
import torch

from drustage.evaluation.detection import BoneDetectionMetrics, DetectionMetrics
from drustage.training import engine
from drustage.training.engine import BestWeights, DetectorPhase, optimisation_step, train_one_epoch, training_precision


def _linear(value: float = 1.0) -> torch.nn.Linear:
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(value)
    return layer


def test_a_non_finite_loss_stops_with_where_it_happened():
    layer = _linear()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = layer(torch.tensor([[float("nan"), 1.0]])).sum()
    with pytest.raises(RuntimeError, match="non-finite loss nan at classifier epoch 3; lower the learning rate"):
        optimisation_step(loss, optimizer, torch.amp.GradScaler("cpu", enabled=False), "classifier epoch 3")
    assert torch.equal(layer.weight, torch.ones(1, 2))  # nothing stepped


def test_clipping_bounds_the_step():
    steps = {}
    for clip in (None, 0.5):
        layer = _linear()
        optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
        loss = layer(torch.tensor([[300.0, 400.0]])).sum()  # gradient (300, 400), norm 500
        optimisation_step(loss, optimizer, torch.amp.GradScaler("cpu", enabled=False), "test",
                          clip=None if clip is None else (list(layer.parameters()), clip))
        steps[clip] = float(torch.linalg.norm(layer.weight.detach() - 1.0))
    assert steps[None] == pytest.approx(500.0)
    assert steps[0.5] == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("enabled", [True, False])
def test_training_precision_is_bfloat16_on_a_native_cpu_unless_turned_off(monkeypatch, enabled):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    conv = torch.nn.Conv2d(1, 4, 3)
    with training_precision(torch.device("cpu"), enabled):
        out = conv(torch.randn(2, 1, 8, 8))
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)
    out.float().sum().backward()  # weights stay float32 and receive float32 gradients
    assert conv.weight.dtype == conv.weight.grad.dtype == torch.float32


class _CountingLoader:
    """A loader of one-image detection batches that counts the batches drawn from it."""

    def __init__(self, batches: int):
        self.batches, self.drawn = batches, 0

    def __iter__(self):
        for _ in range(self.batches):
            self.drawn += 1
            yield [torch.ones(2)], [{"x": torch.ones(1)}]


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))

    def forward(self, images, targets):
        value = sum((self.weight * image).sum() for image in images)
        return {"wanted": value, "ignored": value * 1000}


@pytest.mark.parametrize("limit, expected", [(3, 3), (10, 5)])
def test_one_epoch_stops_at_its_limit_without_drawing_more(limit, expected):
    model = _Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    phase = DetectorPhase("joint", ("wanted",), list(model.parameters()), optimizer,
                          torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0))
    loader = _CountingLoader(5)
    losses = list(train_one_epoch(model, phase, loader, torch.device("cpu"),
                                  torch.amp.GradScaler("cpu", enabled=False), limit))
    assert len(losses) == expected and loader.drawn == expected
    # each step of 0.1 x gradient (1, 1) lowers the "wanted" loss (w . (1, 1)) by 0.2; "ignored" is not optimised
    assert losses[1] == pytest.approx(losses[0] - 0.2)


def test_best_weights_keep_the_best_score_and_break_ties_by_the_tuple():
    best, model = BestWeights(), _linear(1.0)
    assert best.offer((0.5, -2.0), 1, model)
    with torch.no_grad():
        model.weight.fill_(2.0)
    assert best.offer((0.5, -1.0), 2, model)  # same score, lower loss
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert not best.offer((0.5, -1.0), 3, model)  # a tie keeps the earlier
    assert not best.offer((0.4, 0.0), 4, model)
    best.restore(model)
    assert best.step == 2 and torch.equal(model.weight, torch.full((1, 2), 2.0))


def test_validation_counts_each_film_once_not_each_dataset(monkeypatch):
    # 80 phantoms boxed well and a 2-film real set boxed badly: the 2 films must not weigh as 80
    def metrics(films: int, iou: float, rate: float) -> DetectionMetrics:
        bone = BoneDetectionMetrics(ap_50=1.0, ap_50_95=1.0, mean_iou=iou, detection_rate_iou50=rate,
                                    centre_hit_rate=1.0)
        return DetectionMetrics(n=films, map_50=1.0, map=1.0, radius=bone, ulna=bone)

    scored = {80: metrics(80, 0.9, 1.0), 2: metrics(2, 0.1, 0.0)}
    monkeypatch.setattr(engine, "evaluate_detector_on", lambda model, films: scored[len(films)])
    summary = engine.evaluate(None, [[None] * 80, [None] * 2])
    assert summary["val_radius_iou"] == pytest.approx((80 * 0.9 + 2 * 0.1) / 82)
    assert summary["val_ulna_rate"] == pytest.approx(80 / 82)
