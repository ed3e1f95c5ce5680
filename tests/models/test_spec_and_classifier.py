import math

import pytest
import torch

from drustage.models.classifier import StageClassifier
from drustage.models.spec import PRESETS, ConvLayer, parse_conv_spec, parse_fc_spec, parse_net_spec, preset_spec


def test_parse_conv_and_fc():
    assert parse_conv_spec("32c7-64c5") == (ConvLayer(32, 7), ConvLayer(64, 5))
    assert parse_fc_spec("4096-1024") == (4096, 1024)
    spec = parse_net_spec("32c3-64c3", "128")
    assert spec.conv_spec == "32c3-64c3" and spec.fc_spec == "128"


@pytest.mark.parametrize("spec,token,position", [
    ("32c3-64x3", "64x3", 2), ("32c3--64c3", "", 2), ("32c4", "32c4", 1), ("c3", "c3", 1), ("0c3", "0c3", 1),
])
def test_bad_conv_token_is_named(spec, token, position):
    with pytest.raises(ValueError, match=rf"{token!r} at position {position}"):
        parse_conv_spec(spec)


def test_bad_fc_token_and_empty():
    with pytest.raises(ValueError, match=r"'1k' at position 2"):
        parse_fc_spec("4096-1k")
    with pytest.raises(ValueError, match="empty conv"):
        parse_conv_spec("  ")
    with pytest.raises(ValueError, match="net1, net2"):
        preset_spec("net10")


def test_paper_presets():
    assert len(PRESETS) == 9
    assert preset_spec("net7").conv_spec == "32c3-64c3-64c3-128c3-128c3" and preset_spec("net7").fc_spec == "4096-1024"
    assert preset_spec("net8").conv_spec == "32c7-64c5-64c3-128c3-128c3" and preset_spec("net8").fc_spec == "1024-1024"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_runs(name):
    model = StageClassifier(preset_spec(name), num_classes=4)
    assert model(torch.rand(2, 1, 128, 96)).shape == (2, 4)


def test_flattened_size_is_computed_and_init_is_xavier():
    spec = parse_net_spec("8c3-16c5", "32")
    model = StageClassifier(spec, 3, dropout=0.0, input_size=(64, 48))
    first_fc = model.head[1]
    assert first_fc.in_features == 16 * 16 * 12
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.count_nonzero(module.bias) == 0
            fan_in = module.weight[0].numel()
            fan_out = module.weight.shape[0] * (module.weight[0, 0].numel() if module.weight.dim() == 4 else 1)
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert module.weight.abs().max() <= bound + 1e-6
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    network = StageClassifier(spec, 3, dropout=0.5, input_size=(64, 48))
    assert any(isinstance(m, torch.nn.Dropout) for m in network.modules())


def test_conv_layers_use_same_padding_and_pool():
    model = StageClassifier(parse_net_spec("4c7", "8"), 2, input_size=(128, 96))
    assert model.features(torch.rand(1, 1, 128, 96)).shape == (1, 4, 64, 48)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        StageClassifier(preset_spec("net1"), 1)
    with pytest.raises(ValueError, match="below 1 pixel"):
        StageClassifier(parse_net_spec("-".join(["4c3"] * 9), "8"), 2)


def test_standardized_input_ignores_exposure():
    torch.manual_seed(0)
    model = StageClassifier(parse_net_spec("4c3-8c3", "16"), 3, dropout=0.0, standardize=True).eval()
    crops = torch.rand(2, 1, 128, 96)
    # a brighter, higher-contrast exposure of the same crops gives the same logits
    assert torch.allclose(model(crops), model(0.2 + 1.7 * crops), atol=1e-4)
    raw = StageClassifier(parse_net_spec("4c3-8c3", "16"), 3, dropout=0.0).eval()
    raw.load_state_dict(model.state_dict())  # no parameters of its own: same keys either way
    assert not torch.allclose(raw(crops), raw(0.2 + 1.7 * crops), atol=1e-4)
