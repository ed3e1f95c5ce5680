"""What every command group shares: the one-line error, options built from config dataclasses,
threads, the device option and the process group."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path

EXIT_ERROR = 1


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def real_images(folder: Path) -> list[Path]:
    from drustage.data.labels import list_images

    return list_images(folder)


def _field_default(config_class, name: str):
    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def config_option(parser: argparse.ArgumentParser, flag: str, config_class, help: str = "",
                   field: str | None = None, **kwargs) -> None:
    """An option for a field of ``config_class``, left unset unless given: the dataclass keeps the
    one default, and the help shows it."""
    name = field or flag.lstrip("-").replace("-", "_")
    default = _field_default(config_class, name)
    shown = "" if default is None else f"(default {default})"
    parser.add_argument(flag, dest=name, default=None, help=" ".join(part for part in (help, shown) if part),
                        **kwargs)


def overrides(args: argparse.Namespace, config_class, skip: tuple[str, ...] = ()) -> dict:
    """The fields of ``config_class`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process: a choice of the command, never of the library."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@contextlib.contextmanager
def distributed_context(device: str):
    """Under ``torchrun``: this process's place in the process group, closed at the end."""
    from drustage.training.distributed import from_environment

    context = from_environment(device)
    try:
        yield context
    finally:
        if context.enabled:
            import torch.distributed

            torch.distributed.destroy_process_group()


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    from drustage.inference.device import DEFAULT_DEVICE, DEVICE_CHOICES

    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help=f"where the networks run: {DEVICE_CHOICES} (auto: CUDA when present)")
