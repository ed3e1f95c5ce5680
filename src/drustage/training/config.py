"""Training configurations: each default stated once, here; the command line and the demo build
theirs as overrides of these (and import them without torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from drustage.data.augmentation import BoxAugmentation
from drustage.inference.device import DEFAULT_DEVICE
from drustage.models.config import DetectorConfig
from drustage.models.spec import parse_net_spec, preset_spec
from drustage.stages import Bone, get_scheme, parse_stage

if TYPE_CHECKING:
    from drustage.data.layout import Dataset

__all__ = ["ClassifierConfig", "DetectorTrainConfig"]


OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class ClassifierConfig:
    bone: Bone = "radius"
    scheme: str = "phase4"
    net: str = "net7"  # a preset name, or "custom" with conv_spec/fc_spec
    conv_spec: str = ""
    fc_spec: str = ""
    dropout: float = 0.5
    standardize: bool = True  # per-crop zero mean / unit variance at the input (see InstanceStandardize)
    batch_norm: bool = False  # a batch normalisation after each conv (not in the paper's networks)
    optimizer: str = "adam"  # "adam", "adamw" (decoupled weight decay) or "sgd"
    weight_decay: float = 0.0
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine": annealed to zero over the run's steps
    batch_size: int = 16
    epochs: int = 20
    seed: int = 0
    balance: bool = True  # oversample minority classes to the majority count
    augment: int = 5  # epoch-size factor; 1 means no augmentation
    # Fixed samples per epoch, drawn from the (balanced, augmented) pool; lets experiments compare
    # conditions at equal compute. None: the whole pool once per epoch.
    epoch_samples: int | None = None
    max_shift: float = 0.06  # translation, fraction of the crop
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_rotation: float = 0.0  # degrees either way
    # each crop's intensities raised to a power drawn log-uniformly from (1 / g, g): films differ
    # in exposure curve, not only in brightness and contrast (which the standardisation removes)
    max_gamma: float = 1.0
    test_per_class: int | None = None  # the paper: 25 radius, 50 ulna
    test_fraction: float = 0.2  # used when test_per_class is None
    val_fraction: float = 0.1
    min_stage: str | None = None  # e.g. "R5": the paper's radius set has no R1-R4
    aged_weight: float = 1.0  # weight of the aged films' soft loss against the labelled crops'
    aged_batch: int = 16  # aged crops drawn beside each labelled batch
    aged_spread: float = 0.8  # width (stages, one sd) of an aged film's target stage distribution
    # weight of a within-sex pairwise ranking loss on the aged films' expected class: a film older
    # by more than aged_rank_margin years should read more mature (RankNet's logistic loss)
    aged_rank_weight: float = 0.0
    aged_rank_margin: float = 1.0
    # mixup of the aged films within sex (crops, targets and ages blended in a Beta(a, a) share);
    # 0 leaves them unmixed
    aged_mixup: float = 0.0
    # share of each aged batch cut from the training films with the box moved off the bones (soft
    # tissue, a finger, a marker, background), with a uniform target: what a detector's stray box
    # shows should read as no stage in particular (low confidence, flagged), not as a confident one
    off_bone_share: float = 0.0
    # the other bone's crop of each film joins its off-bone crops: a box on the wrong bone (the
    # detector's ulna box on the radius) should read as no stage either
    off_bone_other_bone: bool = False
    # the detector's stray candidates on each film (``stray_boxes`` of the aged dataset's manifest:
    # fingertips, the thumb, the carpus) join its off-bone crops: hard negatives, since a wrong kept
    # box shows the same things
    off_bone_strays: bool = False
    # With off-bone crops, a reading is withheld (no readable bone in the box) when its class spread
    # (``inference.classifier.class_spread``) exceeds a threshold fitted on the validation films: the
    # spread that leaves this share of their off-bone crops read ...
    readable_off_bone_read: float = 0.05
    # ... raised, if need be, until at least this share of their on-bone crops is read
    readable_min_kept: float = 0.97
    calibrate: bool = True  # fit a temperature on the validation crops after model selection
    per_class_cap: dict[str, int] | None = None  # subsample classes, e.g. the paper's set sizes
    device: str = DEFAULT_DEVICE  # auto, cpu, cuda or cuda:N
    # train under autocast: float16/bfloat16 on CUDA, bfloat16 on CPUs that compute it natively
    # (AVX-512 BF16, AMX: about twice as fast); False trains in float32 throughout
    mixed_precision: bool = True

    def resolved_spec(self):
        if self.net == "custom":
            return parse_net_spec(self.conv_spec, self.fc_spec)
        return preset_spec(self.net)

    def to_dict(self) -> dict:
        data = asdict(self)
        spec = self.resolved_spec()
        data["conv_spec"], data["fc_spec"] = spec.conv_spec, spec.fc_spec
        data["scale_range"] = list(self.scale_range)
        return data

    def validate(self) -> None:
        get_scheme(self.scheme, self.bone)
        self.resolved_spec()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not 0 <= self.max_rotation <= 45:
            raise ValueError(f"max_rotation must be between 0 and 45 degrees, got {self.max_rotation}")
        if not 1 <= self.max_gamma <= 3:
            raise ValueError(f"max_gamma must be between 1 and 3, got {self.max_gamma}")
        for name in ("lr", "batch_size", "epochs", "augment"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.aged_weight < 0 or self.aged_batch <= 0 or self.aged_spread <= 0:
            raise ValueError("aged_weight must be >= 0, aged_batch and aged_spread positive")
        if self.aged_rank_weight < 0 or self.aged_rank_margin < 0 or self.aged_mixup < 0:
            raise ValueError("aged_rank_weight, aged_rank_margin and aged_mixup must be >= 0")
        if not 0 <= self.off_bone_share < 1:
            raise ValueError(f"off_bone_share must be in [0, 1), got {self.off_bone_share}")
        for name in ("readable_off_bone_read", "readable_min_kept"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.epoch_samples is not None and self.epoch_samples <= 0:
            raise ValueError(f"epoch_samples must be positive, got {self.epoch_samples}")
        if self.min_stage is not None:
            parse_stage(self.min_stage, self.bone)


@dataclass
class DetectorTrainConfig:
    model: DetectorConfig = field(default_factory=DetectorConfig)
    schedule: str = "joint"  # "joint" or "alternating"
    iterations: int = 1500
    batch_size: int = 2
    lr: float = 0.01  # the paper's SGD learning rate
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100
    val_fraction: float | list[float] = 0.1  # one for all datasets, or one per dataset
    test_fraction: float | list[float] = 0.1
    validate_every: int = 250
    augment: bool = True
    # Augmentation strength (see BoxAugmentation), one value for all datasets or one per dataset,
    # so boxed real films can be turned or shrunk harder than phantoms.
    rotation: float | list[float] = BoxAugmentation.rotation
    min_scale: float | list[float] = BoxAugmentation.min_scale
    seed: int = 0
    device: str = DEFAULT_DEVICE  # auto, cpu, cuda or cuda:N
    # train under autocast: float16/bfloat16 on CUDA, bfloat16 on CPUs that compute it natively
    # (AVX-512 BF16, AMX: about twice as fast); False trains in float32 throughout
    mixed_precision: bool = True
    weights: str | None = None  # local state dict or detector checkpoint to start from
    # Share of training batches drawn from each dataset when several are given (e.g. phantoms
    # and a few boxed real films); None samples every training image equally often.
    dataset_weights: list[float] | None = None

    def validate(self) -> None:
        self.model.validate()
        if self.schedule not in ("joint", "alternating"):
            raise ValueError(f"schedule must be joint or alternating, got {self.schedule!r}")
        for name in ("iterations", "batch_size", "lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dataset_weights is not None and not all(w > 0 for w in self.dataset_weights):
            raise ValueError(f"dataset weights must be positive, got {self.dataset_weights}")
        for rotation in _as_list(self.rotation):
            for min_scale in _as_list(self.min_scale):
                BoxAugmentation(rotation, min_scale).validate()

    def check_dataset_count(self, count: int) -> None:
        """Per-dataset settings must name every dataset (checked before any image is read)."""
        if self.dataset_weights is not None and len(self.dataset_weights) != count:
            raise ValueError(f"{len(self.dataset_weights)} dataset weights for {count} datasets")
        for name in ("test_fraction", "val_fraction", "rotation", "min_scale"):
            values = _as_list(getattr(self, name))
            if len(values) not in (1, count):
                raise ValueError(f"{len(values)} values of {name} for {count} datasets")

    def to_dict(self) -> dict:
        return asdict(self)

    def augmentation(self, index: int) -> BoxAugmentation | None:
        """Dataset ``index``'s training augmentation (None when augmentation is off)."""
        if not self.augment:
            return None
        return BoxAugmentation(_per_dataset(self.rotation, index), _per_dataset(self.min_scale, index))

    def split(self, dataset: Dataset, index: int = 0):
        """Dataset ``index``'s seeded train/validation/test records."""
        from drustage.data.detection import split_records

        return split_records(dataset, self.seed, _per_dataset(self.test_fraction, index),
                             _per_dataset(self.val_fraction, index))


def _as_list(value: float | list[float]) -> list[float]:
    return [value] if isinstance(value, (int, float)) else list(value)


def _per_dataset(value: float | list[float], index: int) -> float:
    """Dataset ``index``'s setting from one value for all or a list with one per dataset."""
    values = _as_list(value)
    return float(values[0] if len(values) == 1 else values[index])
