"""llama.cpp: llama-server on a model's GGUF file as shipped (not bench's bf16 copy), started by bench on 127.0.0.1.

The binaries are the ones `.ci/llamacpp_env.sh` builds into the bench cache (cache_dir()/llama.cpp/VERSION/bin,
with a build.json saying which release), or those in the folder BENCH_LLAMA_CPP names (a user's own build; its
build id is what `llama-server --version` says). Requests go through the OpenAI-compatible client of
harness/backends/openai.py; what is run (quantisation, the file's sha256 and weight bytes, llama.cpp's build, the
threads, context and batch settings) goes into every row's backend_info.
"""

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.backends.openai import OpenAIBackend
from harness.backends.server import LocalServer
from harness.errors import UnavailableError
from harness.measure.memory import MIB
from harness.measure.roofline import ModelShape

# The settings bench passes unless a suite's `server: {args}` says otherwise, and the flags that set them: rows
# record the values in force (the last one given wins, as in llama.cpp's own parsing).
SETTINGS = {"threads": ("-t", "--threads"), "ctx_size": ("-c", "--ctx-size"), "batch_size": ("-b", "--batch-size"),
            "ubatch_size": ("-ub", "--ubatch-size"), "parallel": ("-np", "--parallel")}
DEFAULTS = {"ctx_size": 4096, "batch_size": 2048, "ubatch_size": 512, "parallel": 4}


@dataclass(frozen=True)
class Build:
    bin_dir: Path
    build_id: str  # llama.cpp's release, e.g. b11434

    def tool(self, name: str) -> Path:
        return self.bin_dir / name


def find_build() -> Build:
    """The llama.cpp build to run: BENCH_LLAMA_CPP's folder, else the newest one in the bench cache."""
    from harness.zoo import cache_dir

    own = os.environ.get("BENCH_LLAMA_CPP")
    if own:
        folder = Path(own).expanduser()
        if not (folder / "llama-server").is_file():
            raise UnavailableError(f"BENCH_LLAMA_CPP={own} holds no llama-server")
        said = subprocess.run([str(folder / "llama-server"), "--version"], capture_output=True, text=True, timeout=30)
        # "version: 0.6.0-dev (build 11434, commit abc1234)"; a build made outside git says build 0.
        found = re.search(r"\(build (\d+), commit (\w+)\)", said.stdout + said.stderr)
        return Build(folder, f"b{found.group(1)}-{found.group(2)}" if found else "unknown")
    builds = sorted(cache_dir().glob("llama.cpp/*/build.json"), key=lambda p: p.stat().st_mtime)
    if not builds:
        raise UnavailableError("llama.cpp is not built on this machine",
                               hint="run `sh .ci/llamacpp_env.sh` (about 8 minutes on 2 cores), or set "
                                    "BENCH_LLAMA_CPP to the folder of your own llama-server")
    return Build(builds[-1].parent / "bin", json.loads(builds[-1].read_text())["build"])


def gguf_facts(path: Path) -> dict:
    """What a GGUF file holds: its quantisation (llama.cpp's file type), sha256, parameters and weight bytes (the
    tensors' bytes as stored, which a decode step reads), the parameters and bytes of an input embedding that is
    not also the output head (a step reads only its tokens' rows of it), and the KV-cache bytes per token (K and V
    of every layer in llama-server's default f16 cache)."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(path)

    def value(key: str, default=None):
        field = reader.fields.get(key)
        return field.contents() if field else default

    arch = value("general.architecture")
    heads = value(f"{arch}.attention.head_count")
    head_dim = value(f"{arch}.attention.key_length") or value(f"{arch}.embedding_length") // heads
    kv_heads = value(f"{arch}.attention.head_count_kv", heads)
    file_type = value("general.file_type")
    tensors = {t.name: (int(t.n_elements), int(t.n_bytes)) for t in reader.tensors}
    lookup = tensors["token_embd.weight"] if "output.weight" in tensors and "token_embd.weight" in tensors else (0, 0)
    with open(path, "rb") as handle:
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"quantization": LlamaFileType(file_type).name.removeprefix("MOSTLY_").lower() if file_type is not None
            else "unknown", "gguf_sha256": sha256, "gguf_file": path.name, "architecture": arch,
            "params": sum(n for n, _ in tensors.values()), "weight_bytes": sum(b for _, b in tensors.values()),
            "lookup_params": lookup[0], "lookup_bytes": lookup[1],
            "kv_bytes_per_token": 2 * value(f"{arch}.block_count") * kv_heads * head_dim * 2}


def server_arguments(args: tuple[str, ...]) -> tuple[list[str], dict]:
    """llama-server's settings: bench's defaults (threads: the CPUs this process may use) for those that `args` does
    not set, then `args` (each flag once: llama.cpp warns of a flag given twice, and keeps the last), and the values
    in force, for the rows."""
    defaults = {"threads": len(os.sched_getaffinity(0)), **DEFAULTS}
    given = {name: [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in flags] for name, flags in SETTINGS.items()}
    # --metrics: the served scenario reads its /metrics (harness/backends/server_metrics.py).
    command = [arg for name, value in defaults.items() if not given[name] for arg in (SETTINGS[name][0], str(value))]
    in_force = {name: int(given[name][-1]) if given[name] else value for name, value in defaults.items()}
    return [*command, "--metrics", *args], in_force


def llama_server(gguf: Path, log_path: Path, args: tuple[str, ...] = (), start_timeout_s: float = 600.0
                 ) -> tuple[LocalServer, dict]:
    """llama-server on `gguf` with bench's settings and `args` after them, not started yet; and what the backend is
    told of it (the `server` option's model_name, kind and version, and the facts its rows carry)."""
    build = find_build()
    command, settings = server_arguments(args)
    details = {"model_name": str(gguf), "kind": "llama.cpp", "version": build.build_id,
               "facts": {**gguf_facts(gguf), "build": build.build_id, **settings}}
    server = LocalServer("llama.cpp", str(gguf), log_path, program=str(build.tool("llama-server")),
                         args=tuple(command), start_timeout_s=start_timeout_s)
    return server, details


class LlamaCppBackend(OpenAIBackend):
    """The `llamacpp` backend: the openai client on a llama-server that ServerPool starts for the model's GGUF.
    Its weight bytes are the file's, so its model shape (for weights_mib and the roofline) is the GGUF's."""

    name = "llamacpp"

    def model_shape(self) -> ModelShape:
        facts = self.facts
        params, bytes_read = facts["params"] - facts["lookup_params"], facts["weight_bytes"] - facts["lookup_bytes"]
        return ModelShape(total_params=facts["params"], bytes_per_param=bytes_read / params,
                          lookup_only_params=facts["lookup_params"], kv_bytes_per_token=facts["kv_bytes_per_token"])

    def memory(self) -> dict[str, float]:
        return {"weights_mib": self.facts["weight_bytes"] / MIB}
