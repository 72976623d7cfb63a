"""Starts an OpenAI-compatible server (vLLM, `transformers serve` or llama.cpp's llama-server) on 127.0.0.1 for one
model, and stops it."""

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness.backends.openai import http_get
from harness.errors import BenchError, ConfigError, UnavailableError

SERVER_KINDS = ("transformers", "vllm", "llama.cpp")
# Backends that talk to a server rather than load weights themselves, and the server each starts of its own
# (None: the one the suite's `server:` section names).
SERVED_BACKENDS = {"openai": None, "llamacpp": "llama.cpp"}
# Both servers name dtypes as torch does.
TORCH_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "auto"}
# vLLM on a CPU reserves most of the machine's RAM for its KV cache unless told otherwise (seen here: 20.6 of 23.5
# GiB, and the kernel then killed its worker when bench's own processes grew). 4 GiB holds tens of thousands of
# tokens of a small model; a user's VLLM_CPU_KVCACHE_SPACE wins.
VLLM_CPU_KV_CACHE_GIB = "4"


def vllm_environment(env: dict) -> dict:
    """`env` with vLLM's CPU KV-cache size set, unless it already is."""
    return {"VLLM_CPU_KVCACHE_SPACE": VLLM_CPU_KV_CACHE_GIB, **env}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(kind: str, model_path: str, port: int, program: str, device: str, dtype: str,
                   args: tuple[str, ...] = ()) -> list[str]:
    """The command line that starts a server of `kind` on 127.0.0.1:`port`. `program`: the Python that runs
    transformers or vLLM, or llama.cpp's llama-server; `model_path`: a model folder, or for llama.cpp a GGUF file."""
    if kind == "transformers":
        command = [program, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1", "--port",
                   str(port), "--dtype", TORCH_DTYPE_NAMES[dtype], model_path]
        if device != "auto":
            command[-1:-1] = ["--device", device]
    elif kind == "vllm":
        command = [program, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path, "--host", "127.0.0.1",
                   "--port", str(port), "--dtype", TORCH_DTYPE_NAMES[dtype]]
    elif kind == "llama.cpp":
        command = [program, "-m", model_path, "--host", "127.0.0.1", "--port", str(port), "--alias", model_path]
    else:
        raise ConfigError(f"unknown server kind {kind!r}; known: {', '.join(SERVER_KINDS)}")
    return [*command, *args]


class LocalServer:
    """One server process in its own process group, its output in `log_path`; a context manager that stops it.

    `program` is the Python that runs it (vLLM usually lives in a virtual environment of its own; default: this
    one), or llama.cpp's llama-server."""

    def __init__(self, kind: str, model_path: str, log_path: Path, device: str = "auto", dtype: str = "auto",
                 program: str | None = None, args: tuple[str, ...] = (), start_timeout_s: float = 600.0):
        self.kind, self.log_path, self.start_timeout_s = kind, Path(log_path), start_timeout_s
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = server_command(kind, model_path, self.port, program or sys.executable, device, dtype, args)
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        if self.kind == "vllm":
            env = vllm_environment(env)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            except OSError as exc:
                raise UnavailableError(f"cannot start the {self.kind} server: {exc}") from None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UnavailableError(f"the {self.kind} server exited with code {self.process.returncode} while "
                                       f"starting: {self._log_tail()}", hint=f"its log: {self.log_path}")
            if http_get(self.base_url, "/health", timeout_s=2)[0] == 200:
                return self.base_url
            time.sleep(0.5)
        self.stop()
        raise UnavailableError(f"the {self.kind} server was not ready within {self.start_timeout_s:g} s",
                               hint=f"its log: {self.log_path}")

    def _log_tail(self) -> str:
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else "(no output)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ServerPool:
    """The server of a suite's `openai` cells: the running one its `server:` section names, or one it starts per
    model on 127.0.0.1. Cells come model by model, so a model's server starts before its first cell and stops
    before the next model's first cell, or at close()."""

    def __init__(self, spec, logs: Path):  # spec: the suite's ServerSpec, or None
        self.spec, self.logs = spec, Path(logs)
        self.running: LocalServer | None = None
        self.started_for: tuple[str, str] | None = None  # (server kind, model path) of the running or failed one
        self.details: dict = {}
        self.failure: str | None = None

    def attach(self, cell):
        """The cell with its server, and why it cannot run: its own reason, or a server that would not start."""
        if cell.unavailable or cell.backend not in SERVED_BACKENDS:
            return cell, cell.unavailable
        try:
            return dataclasses.replace(cell, server=self._server(cell)), None
        except BenchError as exc:
            return cell, exc.message

    def _server(self, cell) -> dict:
        spec, launch = self.spec, SERVED_BACKENDS[cell.backend]
        if launch is None and not spec:
            raise ConfigError("the openai backend needs a server: a suite `server:` section (base_url, or launch)")
        if launch is None and spec.base_url:
            return spec.model_dump(include={"base_url", "model_name", "api_key"}, exclude_none=True)
        launch = launch or spec.launch
        # The suite's settings for this kind of server (a llamacpp cell's are those of `launch: llama.cpp`).
        own = spec if spec and spec.launch == launch else None
        if self.started_for != (launch, cell.model_path):
            self.close()
            self.started_for = (launch, cell.model_path)
            try:
                self.running, self.details = self._start(launch, cell, own)
            except BenchError as exc:
                self.failure = exc.message
        if self.failure:
            raise UnavailableError(self.failure)
        return {"base_url": self.running.base_url, "kind": launch, "device": cell.device,
                "device_name": cell.machine.probe.device_name, **self.details}

    def _start(self, launch: str, cell, own) -> tuple[LocalServer, dict]:
        """Starts the server for the cell's model; with what the cells' rows say of it (for llama.cpp: the GGUF and
        the build that run)."""
        name = re.sub(r"[^\w.-]", "_", cell.model)
        log = self.logs / f"server-{name}-{launch}.log"
        args, timeout = (own.args, own.start_timeout_s) if own else ((), 600.0)
        if launch == "llama.cpp":
            from harness import zoo
            from harness.backends.llamacpp import llama_server

            server, details = llama_server(zoo.gguf_file(cell.model, cell.model_path), log, args, timeout)
        else:  # both servers know the model by the path they were started with
            details = {"model_name": cell.model_path}
            server = LocalServer(launch, cell.model_path, log, cell.device, cell.dtype, own.python, args, timeout)
        server.start()
        return server, details

    def close(self) -> None:
        if self.running:
            self.running.stop()
        self.running, self.started_for, self.details, self.failure = None, None, {}, None
