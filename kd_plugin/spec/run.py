"""The run spec: what a training run is asked to do, typed and validated, the one language between layers.

Every entry point produces a :class:`RunSpec` (``compress_classifier`` flags over a schedule's ``training:``
section, ``main_KD_CIFAR10``'s positional arguments, ``--mutual``, a sweep cell, a reproduce stage); the engine
(single and mutual), evaluate and the records consume one. Child runs of sweeps and reproduce get a spec file
(``compress_classifier --spec FILE``), so the flag parser is never in between twice.

Each field is declared once, here: its type and range (pydantic enforces them), the flag that sets it, what a
bad value is told (``--lr must be a number > 0, got -1.0``), and its role on resume (ROLES: how a resume compares
it, or not at all for the free ones: threads, progress, output, device ...). The field names of ``distillation``
are the arguments of the YAML schedule's KnowledgeDistillationExtension, so flags override the schedule's KD by
name, with no rename table.
"""
from __future__ import annotations

import json
import math
import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from ..protocol.config import MAX_POLICY_EPOCH
from ..util.errors import FieldErrors, KDPluginError
from .meaning import check_meaning

SPEC_VERSION = 1
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}
MAX_EPOCHS = MAX_POLICY_EPOCH  # far beyond any real schedule; 1e9 epochs is refused instead of exhausting memory


# How a resume compares a field with the checkpoint's (the declared partition):
#   compared: its value, as recorded in the spec;
#   built:    what is built from it (the optimizer's hyper-parameters, each distillation policy's teacher, weights
#             digest, T, loss weights and loss, the schedule's digest, the data's digest and order), so that a flag
#             and a schedule that say the same thing agree;
#   path:     through the digest of what the file holds (data, schedule, teacher weights), never by its name;
#   longer:   not: a finished run may be continued for more epochs;
#   free:     not at all: how the run runs (threads, device, progress, output, resume options).
# Every role but free defines the experiment (a sweep's done check compares them).
ROLES = ("compared", "built", "path", "longer", "free")


def _field(default: Any, flag: str, must: str, dest: str | None = None, role: str = "built") -> Any:
    """A spec field set by FLAG (argparse dest DEST, default: the attribute's name), refused unless it is MUST;
    ROLE: how a resume compares it (ROLES)."""
    assert role in ROLES, role
    return Field(default, json_schema_extra={"flag": flag, "must": must, "dest": dest, "role": role})


StrictPosInt = Annotated[int, Field(strict=True, ge=1)]
StrictNonNegInt = Annotated[int, Field(strict=True, ge=0)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # an int is a number; a bool or a string is not
NameList = list[str]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class DataSpec(Section):
    path: str = _field(..., "DATASET_DIR", "a folder", dest="data", role="path")
    dataset: str | None = _field(None, "--dataset", "a registered dataset")
    augment: Literal["y", "n"] = _field("y", "--augment", "'y' or 'n'")
    validation_split: Annotated[Number, Field(ge=0, lt=1)] = _field(0.1, "--validation-split", "in [0, 1)",
                                                                      role="compared")
    batch_size: StrictPosInt = _field(256, "--batch-size", "an integer >= 1")
    seed: StrictNonNegInt | None = _field(None, "--seed", "an integer >= 0")
    normalization: str | None = _field(None, "--normalization", "a name or MEAN,STD")
    download: StrictBool = _field(False, "--download", "true or false", role="free")


class ModelSpec(Section):
    arch: str | None = _field(None, "--arch", "a registered model")
    load_weights_from: str | None = _field(None, "--exp-load-weights-from", "a checkpoint file", role="path")


class OptimizerSpec(Section):
    name: Literal["sgd", "adam"] = _field("sgd", "--optimizer", "one of sgd, adam", dest="optimizer")
    lr: Annotated[Number, Field(gt=0)] | None = _field(None, "--lr", "a number > 0")
    momentum: Annotated[Number, Field(ge=0, lt=1)] = _field(0.9, "--momentum", "in [0, 1)")
    weight_decay: Annotated[Number, Field(ge=0)] = _field(1e-4, "--wd", ">= 0")

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ScheduleSpec(Section):
    file: str | None = _field(None, "--compress", "a YAML schedule", dest="compress", role="path")
    epochs: Annotated[int, Field(strict=True, ge=1, le=MAX_EPOCHS)] = _field(1, "--epochs",
                                                                             f"an integer >= 1 (at most {MAX_EPOCHS})",
                                                                             role="longer")


class DistillationSpec(Section):
    """Flag-declared KD, or overrides of the schedule's KD extension (its argument names)."""
    teacher_arch: str | NameList | None = _field(None, "--kd-teacher", "model names", dest="kd_teacher")
    teacher_checkpoint: str | NameList | None = _field(None, "--kd-resume", "checkpoint files", dest="kd_resume",
                                                       role="path")
    teacher_weights: list[Number] | None = _field(None, "--kd-teacher-weights", "numbers",
                                                 dest="kd_teacher_weights")  # their sum: check_member_weights
    teacher_combine: Literal["logits", "probs"] | None = _field(None, "--kd-teacher-combine", "logits or probs",
                                                                dest="kd_teacher_combine")
    temperature: Annotated[Number, Field(gt=0)] | None = _field(None, "--kd-temperature", "a number > 0",
                                                                dest="kd_temperature")
    distill_weight: Annotated[Number, Field(ge=0)] | None = _field(None, "--kd-distill-wt", ">= 0",
                                                                   dest="kd_distill_wt")
    student_weight: Annotated[Number, Field(ge=0)] | None = _field(None, "--kd-student-wt", ">= 0",
                                                                   dest="kd_student_wt")
    teacher_weight: Annotated[Number, Field(ge=0)] | None = _field(None, "--kd-teacher-wt", ">= 0",
                                                                   dest="kd_teacher_wt")
    start_epoch: StrictNonNegInt | None = _field(None, "--kd-start-epoch", "an integer >= 0", dest="kd_start_epoch")
    loss: str | None = _field(None, "--kd-loss", "a registered loss", dest="kd_loss")
    loss_args: dict[str, Any] | None = _field(None, "--kd-loss-arg", "NAME=VALUE pairs", dest="kd_loss_args")
    logit_standardize: StrictBool | None = _field(None, "--kd-logit-standardize", "true or false",
                                                  dest="kd_logit_standardize")
    random_teacher: StrictBool = _field(False, "--kd-random-teacher", "true or false", dest="kd_random_teacher",
                                        role="compared")
    cache: Annotated[str, Field(min_length=1)] = _field("auto", "--teacher-cache", "auto, off or a directory",
                                                        dest="teacher_cache", role="free")

    def declared(self) -> list[str]:
        """The flags of the KD-only fields this section sets (a teacher's settings without a teacher)."""
        return [flag for name, flag in KD_ONLY.items() if _is_set(getattr(self, name))]


def _is_set(value: Any) -> bool:
    """Whether a flag gave VALUE: 0 (a weight, a start epoch) is a setting, None/False/{} are not."""
    return value is not None and value is not False and value != {}


class MutualSpec(Section):
    peers: list[str] | None = _field(None, "--mutual", "two or more model names", dest="mutual")
    temperature: Annotated[Number, Field(gt=0)] | None = _field(None, "--mutual-temperature", "a number > 0",
                                                                dest="mutual_temperature")


class RuntimeSpec(Section):
    device: str = _field("cpu", "--device", "cpu, cuda or cuda:N", role="free")
    threads: StrictPosInt | None = _field(None, "--threads", "an integer >= 1", role="free")
    amp: Literal["bf16", "fp16"] | None = _field(None, "--amp", "one of bf16, fp16", role="free")
    channels_last: StrictBool = _field(False, "--channels-last", "true or false", role="free")
    compile: StrictBool = _field(False, "--compile", "true or false", role="free")
    sync_bn: StrictBool = _field(False, "--sync-bn", "true or false", role="free")
    backend: Literal["builtin", "distiller", "auto"] = _field("builtin", "--backend", "builtin, distiller or auto",
                                                              role="free")
    deterministic: StrictBool = _field(False, "--deterministic", "true or false", role="free")
    progress: StrictBool = _field(True, "--no-progress", "true or false", role="free")
    verbose: StrictBool = _field(True, "verbose", "true or false", role="free")
    print_freq: StrictPosInt = _field(10, "--print-freq", "an integer >= 1", role="free")
    out_dir: str = _field("logs", "--out-dir", "a folder", role="free")
    name: str | None = _field(None, "--name", "a name, not a path", role="free")


class ResumeSpec(Section):
    checkpoint: str | None = _field(None, "--resume-from", "a checkpoint file", dest="resume_from", role="free")
    reset_optimizer: StrictBool = _field(False, "--reset-optimizer", "true or false", role="free")
    accept_changes: StrictBool = _field(False, "--resume-accept-changes", "true or false",
                                        dest="resume_accept_changes", role="free")


class RunSpec(Section):
    """A whole run. Sections: data, model, optimizer, schedule, distillation, mutual, runtime, resume."""
    version: Literal[1] = 1  # SPEC_VERSION
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    distillation: DistillationSpec = Field(default_factory=DistillationSpec)
    mutual: MutualSpec = Field(default_factory=MutualSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    resume: ResumeSpec = Field(default_factory=ResumeSpec)
    command: list[str] | None = Field(None, json_schema_extra={"free": True})  # the argv that started it

    @model_validator(mode="after")
    def _meaning(self) -> RunSpec:
        """What types and ranges cannot say: registered names, a teacher's members, ranges between fields
        (KDPluginError, which pydantic lets through with its own message)."""
        if self.optimizer.lr is None:
            self.optimizer.lr = DEFAULT_LR[self.optimizer.name]
        check_meaning(self)
        return self

    # --- building -----------------------------------------------------------------------------------------
    @classmethod
    def from_flags(cls, **values: Any) -> RunSpec:
        """A spec from flat values named as the flags' argparse destinations (``lr``, ``kd_temperature`` ...)."""
        sections: dict[str, dict[str, Any]] = {}
        for dest, value in values.items():
            if dest == "command":
                sections.setdefault("", {})["command"] = value
                continue
            if dest not in FLAG_FIELDS:
                raise KDPluginError(f"unknown run setting {dest!r}")
            section, attr = FLAG_FIELDS[dest]
            sections.setdefault(section, {})[attr] = value
        top = sections.pop("", {})
        return cls.checked({**top, **sections})

    @classmethod
    def checked(cls, content: Any, source: str | None = None) -> RunSpec:
        """CONTENT validated into a spec, every bad field named on a line of its own (KDPluginError)."""
        try:
            spec = cls.model_validate(content)
        except ValidationError as err:
            raise FieldErrors(describe_errors(err, source)) from None
        return spec

    @classmethod
    def read(cls, path: str) -> RunSpec:
        """The spec in the JSON file PATH (a sweep cell's or a reproduce stage's spec.json), its relative paths
        taken from PATH's folder."""
        try:
            with open(path) as fh:
                content = json.load(fh)
        except FileNotFoundError:
            raise KDPluginError(f"--spec {path}: file not found") from None
        except IsADirectoryError:
            raise KDPluginError(f"--spec {path}: is a directory, not a spec file") from None
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise KDPluginError(f"--spec {path}: not a readable JSON spec ({err})") from None
        return cls.from_record(content, os.path.dirname(os.path.abspath(path)), path)

    def changed(self, **flat: Any) -> RunSpec:
        """A copy with the fields named by their flags' destinations set (validated)."""
        return RunSpec.from_flags(**{**self.flat(), **flat})

    def without_distillation(self) -> RunSpec:
        """A copy that trains the student alone (a sweep's baseline cell): no teacher, no KD settings."""
        return self.model_copy(update={"distillation": DistillationSpec(cache=self.distillation.cache)})

    # --- reading ------------------------------------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """{flag destination: value} of every field (the inverse of from_flags)."""
        values = {dest: getattr(getattr(self, section), attr) for dest, (section, attr) in FLAG_FIELDS.items()}
        values["command"] = self.command
        return values

    def record(self, relative_to: str | None = None) -> dict[str, Any]:
        """The spec as JSON-ready data (what checkpoints, summary.json and result.json hold); with RELATIVE_TO,
        its paths relative to that directory (a record that still holds when the runs move together)."""
        content = self.model_dump(mode="json")
        if relative_to is not None:
            _map_paths(content, lambda path: _relative(path, relative_to))
        return content

    def defining_record(self, relative_to: str | None = None) -> dict[str, Any]:
        """record() without the free fields: what two runs of the same experiment share."""
        content = self.record(relative_to)
        for section, attr in ROLE_FIELDS["free"]:
            content[section].pop(attr)
        content.pop("command")
        return content

    @classmethod
    def from_record(cls, content: Any, relative_to: str | None = None, source: str | None = None) -> RunSpec:
        """The spec a record() holds (its relative paths taken from RELATIVE_TO)."""
        if relative_to is not None and isinstance(content, dict):
            content = json.loads(json.dumps(content))
            _map_paths(content, lambda path: os.path.normpath(os.path.join(relative_to, path)))
        return cls.checked(content, source)

    def compared(self) -> dict[str, Any]:
        """{flag: value} of the fields a resume compares by value (role 'compared'), for the run's identity."""
        content = self.record()
        return {FLAG_OF[key]: content[key[0]][key[1]] for key in ROLE_FIELDS["compared"]}

    @staticmethod
    def compared_flags() -> list[str]:
        return [FLAG_OF[key] for key in ROLE_FIELDS["compared"]]

    def first_arch(self) -> str | None:
        return self.mutual.peers[0] if self.mutual.peers else self.model.arch


SECTIONS: dict[str, type[Section]] = {name: info.annotation for name, info in RunSpec.model_fields.items()
                                      if isinstance(info.annotation, type) and issubclass(info.annotation, Section)}


def _declared() -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], str], dict[str, list[tuple[str, str]]]]:
    flags: dict[str, tuple[str, str]] = {}
    labels: dict[tuple[str, str], str] = {}
    roles: dict[str, list[tuple[str, str]]] = {role: [] for role in ROLES}
    for section, model in SECTIONS.items():
        for attr, info in model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            flags[str(extra.get("dest") or attr)] = (section, attr)
            labels[(section, attr)] = str(extra.get("flag") or f"{section}.{attr}")
            roles[str(extra.get("role"))].append((section, attr))
    return flags, labels, roles


FLAG_FIELDS, FLAG_OF, ROLE_FIELDS = _declared()
# The distillation fields that only mean something to a distillation policy (refused without a teacher).
KD_ONLY = {name: FLAG_OF[("distillation", name)] for name in
           ("teacher_checkpoint", "teacher_weights", "teacher_combine", "temperature", "distill_weight",
            "student_weight", "teacher_weight", "loss", "loss_args", "logit_standardize", "start_epoch",
            "random_teacher")}


# Fields that hold paths (record() can write them relative to a run or sweep directory).
PATH_FIELDS = (("data", "path"), ("model", "load_weights_from"), ("schedule", "file"),
               ("distillation", "teacher_checkpoint"), ("distillation", "cache"), ("runtime", "out_dir"),
               ("resume", "checkpoint"))


def _map_paths(content: dict[str, Any], convert: Any) -> None:
    """Apply CONVERT to every path a spec record CONTENT holds, in place (record and from_record: relative <->
    absolute). Anything that is not a path string is left for validation to name."""
    for section, attr in PATH_FIELDS:
        part = content.get(section)
        if not isinstance(part, dict):
            continue
        value = part.get(attr)
        if isinstance(value, list):
            part[attr] = [convert(v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str) and not _keyword(section, attr, value):
            part[attr] = convert(value)


def _keyword(section: str, attr: str, value: str) -> bool:
    """VALUE is a keyword of a path field, not a path (the teacher cache's auto / off)."""
    return (section, attr) == ("distillation", "cache") and value in ("auto", "off")


def _relative(path: str, start: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(start))


def flag_of(section: str, attr: str) -> str:
    return FLAG_OF.get((section, attr), f"{section}.{attr}")


def describe_errors(err: ValidationError, source: str | None = None) -> list[str]:
    """One line per bad field: ``--lr must be a number > 0, got -1.0``."""
    lines = []
    for error in err.errors():
        where = tuple(str(part) for part in error["loc"])
        field = _field_info(where)
        value = error.get("input")
        if error["type"] == "missing":
            lines.append(f"{_label(where)} is required")
        elif where == ("version",):
            lines.append(f"version must be {SPEC_VERSION} (the spec format this kd-plugin reads), got {value!r}")
        elif error["type"] == "extra_forbidden":
            lines.append(f"{'.'.join(where)}: no such run setting")
        elif field is not None:
            shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
            lines.append(f"{_label(where)} must be {field['must']}, got {shown}")
        else:
            lines.append(f"{'.'.join(where) or 'spec'}: {error['msg']}")
    prefix = f"{source}: " if source else ""
    return [prefix + line for line in dict.fromkeys(lines)]


def _field_info(where: tuple[str, ...]) -> dict[str, Any] | None:
    if len(where) < 2 or where[0] not in SECTIONS:
        return None
    info = SECTIONS[where[0]].model_fields.get(where[1])
    extra = info.json_schema_extra if info is not None else None
    return extra if isinstance(extra, dict) else None


def _label(where: tuple[str, ...]) -> str:
    if len(where) >= 2 and (where[0], where[1]) in FLAG_OF:
        return FLAG_OF[(where[0], where[1])]
    return ".".join(where)
