"""The classifier spec grammar, parsed in one place.

Grammar::

    conv_spec := conv ("-" conv)*        conv := FILTERS "c" KERNEL     e.g. 32c7-64c5-64c3
    fc_spec   := units ("-" units)*      units := UNITS                 e.g. 4096-1024

Each conv is same-padded, followed by ReLU and a 2x2 max-pool; each FC layer by ReLU and
(optional) dropout. A bad token raises ``ValueError`` naming the token and its position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONV_TOKEN = re.compile(r"^(\d+)c(\d+)$")
_FC_TOKEN = re.compile(r"^(\d+)$")


@dataclass(frozen=True)
class ConvLayer:
    filters: int
    kernel: int


@dataclass(frozen=True)
class NetSpec:
    conv: tuple[ConvLayer, ...]
    fc: tuple[int, ...]

    @property
    def conv_spec(self) -> str:
        return "-".join(f"{c.filters}c{c.kernel}" for c in self.conv)

    @property
    def fc_spec(self) -> str:
        return "-".join(str(u) for u in self.fc)


def _tokens(spec: str, what: str) -> list[str]:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty {what} spec")
    return spec.strip().split("-")


def parse_conv_spec(spec: str) -> tuple[ConvLayer, ...]:
    layers = []
    for position, token in enumerate(_tokens(spec, "conv"), start=1):
        match = _CONV_TOKEN.match(token)
        if not match:
            raise ValueError(f"bad conv token {token!r} at position {position} of {spec!r}; expected e.g. 32c3")
        filters, kernel = int(match[1]), int(match[2])
        if filters < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"bad conv token {token!r} at position {position} of {spec!r}: "
                "filters must be >= 1 and the kernel odd (same padding)"
            )
        layers.append(ConvLayer(filters, kernel))
    return tuple(layers)


def parse_fc_spec(spec: str) -> tuple[int, ...]:
    units = []
    for position, token in enumerate(_tokens(spec, "fc"), start=1):
        if not _FC_TOKEN.match(token) or int(token) < 1:
            raise ValueError(f"bad fc token {token!r} at position {position} of {spec!r}; expected e.g. 1024")
        units.append(int(token))
    return tuple(units)


def parse_net_spec(conv: str, fc: str) -> NetSpec:
    return NetSpec(parse_conv_spec(conv), parse_fc_spec(fc))


# The paper's nine networks (dru-method.md): (conv spec, fc spec).
PRESETS: dict[str, tuple[str, str]] = {
    "net1": ("32c7-64c5-64c3-32c3", "1024-256"),
    "net2": ("32c7-64c5-64c3-32c3", "1024-1024"),
    "net3": ("32c7-64c5-64c3-32c3", "4096-1024"),
    "net4": ("32c3-64c3-64c3-32c3", "1024-1024"),
    "net5": ("32c3-64c3-64c3-32c3", "4096-1024"),
    "net6": ("32c3-64c3-64c3-128c3-128c3", "1024-1024"),
    "net7": ("32c3-64c3-64c3-128c3-128c3", "4096-1024"),
    "net8": ("32c7-64c5-64c3-128c3-128c3", "1024-1024"),
    "net9": ("32c7-64c5-64c3-128c3-128c3", "4096-1024"),
}


def preset_spec(name: str) -> NetSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(PRESETS)}")
    return parse_net_spec(*PRESETS[name])
