"""Hardware profiles (hardware_profiles/NAME.yaml): a target's published figures, how to recognise it, run defaults.

Figures come from one reference table and stay null where it is empty. Loading needs no torch.
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, UnknownNameError
from harness.hardware import DTYPES
from harness.yamlfile import YamlDoc

PROFILE_DIR = Path(__file__).resolve().parent.parent / "hardware_profiles"
GENERIC = "cpu"  # the profile of any CPU-only machine that no specific profile matches
BACKEND_NAMES = ("transformers", "vllm", "openai")
# The device kinds (as detect_device names them) a profile's kind fits; ROCm GPUs are "cuda" devices too.
KIND_DEVICES = {"gpu": ("cuda",), "apple": ("mps", "cpu"), "cpu": ("cpu",)}

NUMBERS = ("memory_gb", "memory_bandwidth_gbps", "bf16_tflops", "fp8_tflops", "power_w", "price_usd_per_hour")
OPTIONAL_TEXTS = ("vendor", "csv_device", "interconnect", "price_note", "notes")
TEXTS = ("name", "description", "source")
FIELDS = {*NUMBERS, *OPTIONAL_TEXTS, *TEXTS, "kind", "match", "defaults"}
DEFAULTS = {"dtype", "batch_sizes", "backends"}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    kind: str
    vendor: str | None
    csv_device: str | None
    memory_gb: float | None
    memory_bandwidth_gbps: float | None
    bf16_tflops: float | None  # dense
    fp8_tflops: float | None  # dense
    power_w: float | None
    interconnect: str | None
    price_usd_per_hour: float | None
    price_note: str | None
    source: str
    notes: str | None
    match_device_name: str
    match_memory_gb: tuple[float, float] | None
    default_dtype: str
    default_batch_sizes: tuple[int, ...]
    default_backends: tuple[str, ...]
    file: str

    def peak_tflops(self, dtype: str) -> float | None:
        """The datasheet's dense peak for `dtype`; None where the profile has none (fp32 figures are not kept)."""
        return self.bf16_tflops if dtype in ("bf16", "fp16") else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def load_profile(path) -> Profile:
    doc = YamlDoc(path)
    data = doc.data
    doc.check_keys((), data, FIELDS, FIELDS)
    for key in NUMBERS:
        if data[key] is not None and not _is_number(data[key]):
            raise doc.error((key,), f"must be a number >= 0 or null, got {data[key]!r}")
    for key in TEXTS + OPTIONAL_TEXTS:
        optional = key in OPTIONAL_TEXTS
        if not (isinstance(data[key], str) and data[key].strip() or optional and data[key] is None):
            raise doc.error((key,), "must be a non-empty string" + (" or null" if optional else ""))
    if data["kind"] not in tuple(KIND_DEVICES):  # a tuple: an unhashable value is refused, not a TypeError
        raise doc.error(("kind",), f"must be one of {', '.join(KIND_DEVICES)}, got {data['kind']!r}")

    match = data["match"]
    doc.check_keys(("match",), match, {"device_name", "memory_gb"}, {"device_name"})
    pattern = match["device_name"]
    try:
        re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise doc.error(("match", "device_name"), f"not a valid regular expression: {exc}") from None
    memory = match.get("memory_gb")
    if memory is not None:
        if not (isinstance(memory, list) and len(memory) == 2 and all(_is_number(v) for v in memory)):
            raise doc.error(("match", "memory_gb"), f"must be a range [low, high] of GB >= 0, got {memory!r}")
        if memory[0] > memory[1]:
            raise doc.error(("match", "memory_gb"), f"low end {memory[0]} is above high end {memory[1]}")
        memory = (float(memory[0]), float(memory[1]))

    defaults = data["defaults"]
    doc.check_keys(("defaults",), defaults, DEFAULTS, DEFAULTS)
    if defaults["dtype"] not in DTYPES:
        raise doc.error(("defaults", "dtype"), f"must be one of {', '.join(DTYPES)}, got {defaults['dtype']!r}")
    sizes = defaults["batch_sizes"]
    if not (isinstance(sizes, list) and sizes and all(type(v) is int and v >= 1 for v in sizes)):
        raise doc.error(("defaults", "batch_sizes"), f"must be a non-empty list of positive integers, got {sizes!r}")
    backends = defaults["backends"]
    if not (isinstance(backends, list) and backends):
        raise doc.error(("defaults", "backends"), f"must be a non-empty list of backend names, got {backends!r}")
    for i, backend in enumerate(backends):
        if backend not in BACKEND_NAMES:
            raise doc.error(("defaults", "backends", i), f"unknown backend {backend!r}",
                            f"known: {', '.join(BACKEND_NAMES)}")

    return Profile(
        **{key: data[key] for key in (*TEXTS, *OPTIONAL_TEXTS, "kind")},
        **{key: None if data[key] is None else float(data[key]) for key in NUMBERS},
        match_device_name=pattern,
        match_memory_gb=memory,
        default_dtype=defaults["dtype"],
        default_batch_sizes=tuple(sizes),
        default_backends=tuple(backends),
        file=str(path),
    )


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
    if not re.search(profile.match_device_name, device_name, re.IGNORECASE):
        return False, f"device name {device_name!r} does not match /{profile.match_device_name}/"
    reason = f"device name {device_name!r} matches /{profile.match_device_name}/"
    if profile.match_memory_gb is None:
        return True, reason
    low, high = profile.match_memory_gb
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
