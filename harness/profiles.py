"""Hardware profiles (hardware_profiles/NAME.yaml): a target's published figures, how to recognise it, run defaults.

Figures come from one reference table and stay null where it is empty. Loading needs no torch.
"""

import functools
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator

from harness.backends import BACKENDS
from harness.errors import ConfigError, UnknownNameError
from harness.hardware import DTYPES
from harness.specs import Label, Name, Number, PositiveInt, Spec, refuse, validate
from harness.yamlfile import YamlDoc

PROFILE_DIR = Path(__file__).resolve().parent.parent / "hardware_profiles"
GENERIC = "cpu"  # the profile of any CPU-only machine that no specific profile matches
BACKEND_NAMES = tuple(BACKENDS.names())
# The device kinds (as detect_device names them) a profile's kind fits; ROCm GPUs are "cuda" devices too.
KIND_DEVICES = {"gpu": ("cuda",), "apple": ("mps", "cpu"), "cpu": ("cpu",)}

OptionalNumber = Number | None
OptionalText = Label | None


class Match(Spec):
    """How the profile recognises its device: a regular expression over the device name, and a memory range."""

    device_name: Name
    memory_gb: tuple[Number, Number] | None = None

    @field_validator("device_name")
    @classmethod
    def _regex(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise refuse(f"not a valid regular expression: {exc}") from None
        return pattern

    @field_validator("memory_gb", mode="before")
    @classmethod
    def _range(cls, memory):
        numbers = isinstance(memory, list) and all(type(v) in (int, float) and v >= 0 for v in memory)
        if memory is not None and not (numbers and len(memory) == 2):
            raise refuse(f"must be a range [low, high] of GB >= 0, got {memory!r}")
        if memory is not None and memory[0] > memory[1]:
            raise refuse(f"low end {memory[0]:g} is above high end {memory[1]:g}")
        return memory


class Defaults(Spec):
    """What a run on this target uses unless told otherwise."""

    dtype: Literal[DTYPES]
    batch_sizes: Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
    backends: Annotated[tuple[Literal[BACKEND_NAMES], ...], Field(min_length=1)]


class Profile(Spec):
    """Every field is required (null where the reference table is empty), so that a gap is visible in the file."""

    name: Label
    description: Label
    kind: Literal[tuple(KIND_DEVICES)]
    vendor: OptionalText
    csv_device: OptionalText
    memory_gb: OptionalNumber
    memory_bandwidth_gbps: OptionalNumber
    bf16_tflops: OptionalNumber  # dense
    fp8_tflops: OptionalNumber  # dense
    power_w: OptionalNumber
    interconnect: OptionalText
    price_usd_per_hour: OptionalNumber
    price_note: OptionalText
    source: Label
    notes: OptionalText
    match: Match
    defaults: Defaults
    _file: str = PrivateAttr("")

    @property
    def file(self) -> str:
        return self._file

    def peak_tflops(self, dtype: str) -> float | None:
        """The datasheet's dense peak for `dtype`; None where the profile has none (fp32 figures are not kept)."""
        return self.bf16_tflops if dtype in ("bf16", "fp16") else None


def load_profile(path) -> Profile:
    doc = YamlDoc(path)
    profile = validate(Profile, doc.data, str(doc.file), doc.line)
    profile._file = str(path)
    return profile


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def get_profile(name_or_path: str) -> Profile:
    """A profile by name (hardware_profiles/NAME.yaml) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_profile(path)
    file = PROFILE_DIR / f"{name_or_path}.yaml"
    if not file.exists():
        raise UnknownNameError("profile", name_or_path, profile_names(), hint="or pass a path to a profile YAML file")
    return load_profile(file)


@functools.cache
def _specific_profiles() -> tuple[Profile, ...]:
    """The shipped profiles other than the generic one, read once per process."""
    return tuple(get_profile(name) for name in profile_names() if name != GENERIC)


def match(profile: Profile, device_kind: str, device_name: str, memory_gb: float | None) -> tuple[bool, str]:
    """Whether `profile` describes this device, and a one-line reason.

    device_kind is "cuda", "mps" or "cpu"; device_name the torch CUDA device name, else the CPU brand string;
    memory_gb the device memory (GB and GiB both fall within the shipped ranges), None where unknown.
    """
    if device_kind not in KIND_DEVICES[profile.kind]:
        return False, f"profile {profile.name} is for {profile.kind} machines, not a {device_kind} device"
    if profile.name == GENERIC:
        other = next((p for p in _specific_profiles() if match(p, device_kind, device_name, memory_gb)[0]), None)
        if other:
            return False, f"{device_name!r} has its own profile {other.name}"
        return True, f"generic CPU profile: no specific profile matches {device_name!r}"
    if not re.search(profile.match.device_name, device_name, re.IGNORECASE):
        return False, f"device name {device_name!r} does not match /{profile.match.device_name}/"
    reason = f"device name {device_name!r} matches /{profile.match.device_name}/"
    if profile.match.memory_gb is None:
        return True, reason
    low, high = profile.match.memory_gb
    if memory_gb is None:
        return False, f"{reason}, but its memory size is unknown and the profile needs [{low:g}, {high:g}] GB"
    if not low <= memory_gb <= high:
        return False, f"{reason}, but {memory_gb:g} GB is outside [{low:g}, {high:g}]"
    return True, f"{reason} and {memory_gb:g} GB is within [{low:g}, {high:g}]"


def detect(device_kind: str, device_name: str, memory_gb: float | None) -> tuple[Profile | None, str]:
    """The one specific profile matching this device, else the generic `cpu` profile on a CPU, else None."""
    found = []
    for profile in _specific_profiles():
        ok, reason = match(profile, device_kind, device_name, memory_gb)
        if ok:
            found.append((profile, reason))
    if len(found) > 1:
        names = ", ".join(p.name for p, _ in found)
        raise ConfigError(f"device {device_name!r} matches several profiles: {names}", hint="pass --profile NAME")
    if found:
        return found[0]
    if device_kind == "cpu":
        generic = get_profile(GENERIC)
        return generic, match(generic, device_kind, device_name, memory_gb)[1]
    memory = "unknown memory" if memory_gb is None else f"{memory_gb:g} GB"
    return None, f"no profile matches {device_kind} device {device_name!r} ({memory})"
