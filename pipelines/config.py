"""The one configuration mechanism: typed settings, named profiles, overrides, and paths."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from serving.errors import UserError

C = TypeVar("C", bound="TrainConfig")


@dataclasses.dataclass
class TrainConfig:
    """Settings every task shares; a task subclasses it to add its own fields.

    Args:
        epochs: maximum number of passes over the training split.
        batch_size: global batch size.
        learning_rate: Adam's learning rate (of the first epoch, with lr_decay).
        lr_decay: multiply the learning rate by this after every epoch; 1.0 keeps it constant.
        clipnorm: clip each gradient to this norm (against exploding gradients); None turns it off.
        early_stopping_patience: epochs without validation improvement before stopping.
        seed: seeds Python, NumPy and TensorFlow, data shuffling and the validation split.
        max_train_examples: train on this many examples only (tests and smoke runs); None for all.
        max_eval_examples: evaluate on this many test examples only; None for all.
        validation_fraction: share of the training split held out for validation.
        strategy: tf.distribute strategy: default, mirrored or multi_worker.
        tbptt_steps: truncated BPTT chunk length for long sequences; None for full BPTT.
        max_minutes: wall-clock budget of this training run: no epoch is started that would,
            at the pace of the slowest one so far, end past it (each run, also a resumed one,
            counts from its own start); None for no budget.
        ema_momentum: above 0, keep an exponential moving average of the weights, updated
            after every step with this momentum (e.g. 0.999: about the last 1,000 steps;
            it warms up from 0 over the first steps, see training.optimizer._averaging);
            validation, early stopping, checkpoints and exports use the average (Polyak
            averaging); 0 for the raw weights.
        join_timeout_minutes: with strategy multi_worker, how long a worker waits for every
            worker of the cluster to join before it ends with an error.
    """

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_decay: float = 1.0
    clipnorm: float | None = 1.0
    early_stopping_patience: int = 2
    seed: int = 42
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    validation_fraction: float = 0.1
    strategy: str = "default"
    tbptt_steps: int | None = None
    max_minutes: float | None = None
    ema_momentum: float = 0.0
    join_timeout_minutes: float = 10.0

    def validate(self) -> None:
        """Raise a UserError naming the first setting out of range and how to fix it.

        A subclass checks its own settings after `super().validate()`, with the `check_`
        methods below; the trainer calls it before every run, and tasks before they read data
        or build a model.
        """
        self.check_at_least_one("epochs", "batch_size")
        if not 0 < self.learning_rate < math.inf:
            raise UserError(f"learning_rate={self.learning_rate} must be a number above 0",
                            "pass e.g. --set learning_rate=0.001")
        if self.clipnorm is not None and not 0 < self.clipnorm < math.inf:
            raise UserError(f"clipnorm={self.clipnorm} must be a number above 0",
                            "pass e.g. --set clipnorm=1.0, or --set clipnorm=none to not clip")
        if not 0 < self.lr_decay <= 1:
            raise UserError(f"lr_decay={self.lr_decay} must be in (0, 1]",
                            "use e.g. --set lr_decay=0.5, or 1.0 for a constant learning rate")
        if not 0 <= self.ema_momentum < 1:
            raise UserError(f"ema_momentum={self.ema_momentum} must be in [0, 1)",
                            "pass e.g. --set ema_momentum=0.999 to average the weights, or 0 "
                            "for none")
        if not self.join_timeout_minutes > 0:
            raise UserError(f"join_timeout_minutes={self.join_timeout_minutes} must be more "
                            "than 0", "pass e.g. --set join_timeout_minutes=30")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UserError(f"max_minutes={self.max_minutes} must be more than 0",
                            "pass e.g. --set max_minutes=90, or leave it out for no budget")

    def check_at_least_one(self, *names: str) -> None:
        """Check that each named setting (a count or a size) is at least 1."""
        for name in names:
            value = getattr(self, name)
            if value < 1:
                default = next((f.default for f in dataclasses.fields(self) if f.name == name),
                               None)
                example = default if isinstance(default, int) and default >= 1 else 1
                raise UserError(f"{name}={value} must be at least 1",
                                f"pass e.g. --set {name}={example}")

    def check_rates(self, *names: str) -> None:
        """Check that each named setting is a dropout rate, in [0, 1)."""
        for name in names:
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise UserError(f"{name}={value} is not a dropout rate",
                                f"pass a value in [0, 1), e.g. --set {name}=0.2")

    def check_shares(self, *names: str) -> None:
        """Check that each named setting is a share, in [0, 1]."""
        for name in names:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"{name}={value} is not a share",
                                f"pass a value in [0, 1], e.g. --set {name}=0.1")

    def check_choice(self, name: str, allowed: Iterable[str], what: str, flag: str = "") -> None:
        """Check that a setting is one of a few values.

        Args:
            name: the setting.
            allowed: its valid values.
            what: what a valid value is, as the error says it, e.g. "a pooling".
            flag: the command-line form of the fix; empty for `--set NAME=`.
        """
        allowed = list(allowed)
        value = getattr(self, name)
        if value not in allowed:
            raise UserError(f"{name}={value!r} is not {what}",
                            f"use {flag or f'--set {name}='} with one of {allowed}")

    def check_cell(self) -> None:
        """Check that the `cell` setting names a recurrent cell every task's `--cell` takes."""
        from models.layers import CELLS

        self.check_choice("cell", CELLS, "a recurrent cell", "--cell")

    def replace(self: C, **changes: Any) -> C:
        """Return a copy with the given fields changed."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Serialize every field as JSON (the run dir's config.json)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str, where: str = "config") -> C:
        """Read a config written by `to_json`, rejecting unknown fields.

        Args:
            text: the JSON text.
            where: the file it came from, as errors name it.
        """
        fix = "restore the file, or train again with another --run-dir"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{where} is not valid JSON ({err})", fix) from None
        if not isinstance(data, dict):
            raise UserError(f"{where} is not a JSON object of settings", fix)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{where} has unknown settings {unknown}",
                            f"remove them; known settings are {sorted(known)}")
        return cls(**data)


def _parse_value(text: str, annotation: Any, name: str) -> Any:
    """Convert an override's text to the field's declared type."""
    hint = annotation
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else str
    if optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if hint in (int, float, str):
            return hint(text)
    except ValueError:
        example = {bool: "true", int: "3", float: "0.5"}.get(hint, "VALUE")
        raise UserError(f"setting {name}={text!r} is not a valid {getattr(hint, '__name__', hint)}",
                        f"pass a value of that type, e.g. --set {name}={example}") from None
    return text


def make_config(config_class: type[C], profiles: dict[str, dict[str, Any]], profile: str,
                overrides: list[str] | None = None) -> C:
    """Build a config from a named profile plus `key=value` overrides.

    Args:
        config_class: the task's TrainConfig subclass.
        profiles: profile name -> field values that differ from the class defaults.
        profile: the profile to start from (`quick`, `full`, ...).
        overrides: `key=value` strings from the command line, applied last.
    """
    if profile not in profiles:
        raise UserError(f"unknown profile {profile!r}", f"choose one of {sorted(profiles)}")
    return apply_overrides(config_class(**profiles[profile]), overrides)


def apply_overrides(config: C, overrides: list[str] | None) -> C:
    """Return a copy of a config with `key=value` overrides applied (e.g. to a resumed run's).

    Args:
        config: the config to start from.
        overrides: `key=value` strings from the command line.
    """
    config_class = type(config)
    hints = typing.get_type_hints(config_class)
    fields = {f.name for f in dataclasses.fields(config_class)}
    changes = {}
    for item in overrides or []:
        key, (_, sep, value) = override_key(item), item.partition("=")
        if not sep or key not in fields:
            raise UserError(f"cannot apply setting {item!r}",
                            f"use KEY=VALUE with KEY one of {sorted(fields)}")
        changes[key] = _parse_value(value.strip(), hints[key], key)
    return config.replace(**changes)


def override_key(item: str) -> str:
    """The setting a `key=value` override names (dashes read as underscores).

    Args:
        item: one `--set` argument.
    """
    return item.partition("=")[0].strip().replace("-", "_")


def data_dir() -> Path | None:
    """The offline mirror of the raw data sets (`RNNKIT_DATA_DIR`), or None to download."""
    value = os.environ.get("RNNKIT_DATA_DIR")
    return Path(value).expanduser().resolve() if value else None


def tfds_dir() -> Path:
    """Where prepared TFDS data sets are cached (`RNNKIT_TFDS_DIR`), prepared once."""
    value = os.environ.get("RNNKIT_TFDS_DIR")
    default = Path.home() / ".cache" / "rnnkit" / "tensorflow_datasets"
    return Path(value).expanduser().resolve() if value else default


def runs_dir() -> Path:
    """Where run directories are created (`RNNKIT_RUNS_DIR`, default ./runs)."""
    return Path(os.environ.get("RNNKIT_RUNS_DIR", "runs")).expanduser()
