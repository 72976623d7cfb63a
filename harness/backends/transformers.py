"""Hugging Face transformers, in process: per-token timestamps from a generation hook, log-likelihood scoring."""

import contextlib
import copy
import dataclasses
import inspect
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
from transformers.generation import GenerateDecoderOnlyOutput

from harness.backends.base import BackendInfo, Generation
from harness.backends.quantize import quantize
from harness.backends.tokens import Pair, RequestTokens, cut_at_stop
from harness.errors import ConfigError
from harness.hardware import auto_dtype, detect_device, device_name, synchronize
from harness.measure.memory import MIB
from harness.measure.nvml import device_memory
from harness.measure.roofline import ModelShape

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Log-likelihood batches hold at most this many tokens (padding and a shared prefix included): bounds activation
# memory. CPUs get fewer: measured (SmolLM2-135M, bf16, 200 MMLU questions, 2 cores) 2048 is fastest, 6.2 s against
# 7.5 s at 1024 and 6.8 s at 4096: in larger batches the elementwise ops' tensors no longer stay in cache.
LOGLIKELIHOOD_BATCH_TOKENS = 4096
CPU_LOGLIKELIHOOD_BATCH_TOKENS = 2048
GENERATION_BATCH_SIZE = 16
# Shorter shared prefixes are not worth a separate forward pass and a cache copy per batch.
MIN_SHARED_PREFIX = 8


class _TokenClock(StoppingCriteria):
    """generate() calls its stopping criteria once per step of the model, right after the step's tokens are chosen:
    the moment they become available to the caller (one token a step; with speculation, each step's accepted draft
    tokens and the model's own). We synchronise the device, read the host clock and the sequence's length there;
    it never stops."""

    def __init__(self, device: str, prompt_width: int):
        self.device = device
        self.lengths = [prompt_width]
        self.step_times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        synchronize(self.device)
        self.step_times.append(time.perf_counter())
        self.lengths.append(input_ids.shape[1])
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    @property
    def token_times(self) -> list[float]:
        """Each new token's time: that of the step that made it available."""
        steps = zip(self.step_times, self.lengths[:-1], self.lengths[1:], strict=True)
        return [t for t, before, after in steps for _ in range(after - before)]


class _DraftCounter:
    """Counts the draft tokens that assisted generation proposes, while it is entered: generate() makes its
    candidate generator through the model's _get_candidate_generator, whose get_candidates returns the sequence
    with the drafts appended. (transformers has no public count of drafts; without that method, `drafted` is None.)"""

    def __init__(self, model):
        self.model = model
        self.drafted: int | None = 0 if hasattr(model, "_get_candidate_generator") else None

    def __enter__(self) -> "_DraftCounter":
        if self.drafted is not None:
            make = self.model._get_candidate_generator

            def counted(*args, **kwargs):
                generator = make(*args, **kwargs)
                propose = generator.get_candidates

                def get_candidates(input_ids, *more, **named):
                    candidates, logits = propose(input_ids, *more, **named)
                    self.drafted += candidates.shape[1] - input_ids.shape[1]
                    return candidates, logits

                generator.get_candidates = get_candidates
                return generator

            self.model._get_candidate_generator = counted
        return self

    def __exit__(self, *exc) -> None:
        self.model.__dict__.pop("_get_candidate_generator", None)


# transformers 5.x renamed the KV cache's argument and output field `past_key_values` to `cache`; the old name is
# deprecated (to go from models' forward in 5.40, from generate() in 6.0). Earlier 5.x releases know only the old name;
# generate()'s own output class tells which this one takes.
GENERATE_CACHE = ("cache" if "cache" in {f.name for f in dataclasses.fields(GenerateDecoderOnlyOutput)}
                  else "past_key_values")


def cache_argument(model) -> str:
    """The name under which `model`'s forward takes a KV cache: `cache`, or `past_key_values` in transformers before
    the rename and in a model's own code (--trust-remote-code) written for it. (The deprecation wrapper of forward
    keeps the signature of what it wraps.)"""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache that a model's or generate()'s output holds (field `cache`, or `past_key_values` before the
    rename); reading the old name where the new one exists is deprecated."""
    fields = {f.name for f in dataclasses.fields(output)}
    return getattr(output, "cache" if "cache" in fields else "past_key_values", None)


def _tensor_bytes(obj) -> int:
    return obj.numel() * obj.element_size() if isinstance(obj, torch.Tensor) else 0


def _cache_bytes(cache) -> int | None:
    """Bytes held by a transformers Cache (keys and values of every layer); None when its layout is unknown."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    return sum(_tensor_bytes(getattr(layer, "keys", None)) + _tensor_bytes(getattr(layer, "values", None))
               for layer in layers)


class RouteCounter:
    """Forward hooks on the router of every MoE layer, counting the experts each token is sent to. The chosen
    experts are the integer tensor among the router's outputs (its top-k indices)."""

    def __init__(self, routers: list, num_experts: int):
        self.counts = [torch.zeros(num_experts, dtype=torch.long) for _ in routers]
        self._hooks = [router.register_forward_hook(self._hook(index)) for index, router in enumerate(routers)]

    def _hook(self, index: int):
        def count(module, inputs, output):
            outputs = output if isinstance(output, tuple) else (output,)
            chosen = next((t for t in outputs if isinstance(t, torch.Tensor) and not t.is_floating_point()), None)
            if chosen is None:  # a router that returns only scores (the block picks the experts): not counted
                return
            self.counts[index] += torch.bincount(chosen.flatten().cpu(), minlength=len(self.counts[index]))
        return count

    def close(self) -> list[list[int]]:
        for hook in self._hooks:
            hook.remove()
        return [c.tolist() for c in self.counts]


def common_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens every sequence has in common."""
    length = 0
    for column in zip(*sequences, strict=False):  # as far as the shortest
        if any(token != column[0] for token in column):
            break
        length += 1
    return length


class TransformersBackend:
    name = "transformers"
    capabilities = frozenset({"token_times", "loglikelihood", "generation", "router_stats"})

    def load(self, model_path: Path, device: str = "auto", dtype: str = "auto", options: dict | None = None) -> None:
        options = options or {}
        self.device = detect_device(device)
        self.batch_tokens = options.get("loglikelihood_batch_tokens", CPU_LOGLIKELIHOOD_BATCH_TOKENS
                                        if self.device == "cpu" else LOGLIKELIHOOD_BATCH_TOKENS)
        self.generation_batch_size = options.get("generation_batch_size", GENERATION_BATCH_SIZE)
        # Shared prefixes computed once: in log-likelihood groups (see _prefix_groups) and generation (generate_text).
        self.share_prefixes = options.get("share_prefixes", True)
        self.dtype = auto_dtype(self.device) if dtype == "auto" else dtype
        # Code shipped with a model runs only for a model the user named with --trust-remote-code; pickle weights
        # (which can carry code too) load only with --allow-pickle.
        trust = bool(options.get("trust_remote_code", False))
        placement = self._placement(options)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
            self.model = AutoModelForCausalLM.from_pretrained(
                model_path,
                dtype=TORCH_DTYPES[self.dtype],
                attn_implementation=options.get("attn_implementation"),
                trust_remote_code=trust,
                use_safetensors=None if options.get("allow_pickle") else True,
                **placement,
            )
            if not placement:
                self.model.to(self.device)
        except ValueError as exc:
            if trust or "custom code" not in str(exc):
                raise
            raise ConfigError(f"{model_path} needs Python code that it ships, which is not run without "
                              "--trust-remote-code for this model") from None
        self.model.eval()
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.tokens = RequestTokens(self.tokenizer)
        # None: transformers' dynamic cache (what the engine setting `cache_implementation: dynamic` asks for).
        self.cache_implementation = "static" if options.get("cache_implementation") == "static" else None
        self._shape = self._count_parameters()  # before quantization packs the Linear weights out of parameters()
        if options.get("quantize"):
            self.model = quantize(self.model, options["quantize"], self.device, self.dtype)
        if options.get("compile"):
            self._compile_decoding()
        self.speculation = self._speculation(options, trust)

    def _speculation(self, options: dict, trust: bool) -> dict:
        """generate()'s arguments for the engine's speculation: prompt lookup, or a draft model loaded beside this
        one (same device and dtype), which must share this model's tokenizer."""
        if options.get("prompt_lookup_num_tokens"):
            return {"prompt_lookup_num_tokens": options["prompt_lookup_num_tokens"]}
        if not options.get("assistant_model"):
            return {}
        path = Path(options["assistant_model"])
        if AutoTokenizer.from_pretrained(path, trust_remote_code=trust).get_vocab() != self.tokenizer.get_vocab():
            raise ConfigError(f"assistant model {path.name} has another tokenizer than the model: assisted "
                              "generation here needs the same vocabulary")
        draft = AutoModelForCausalLM.from_pretrained(path, dtype=TORCH_DTYPES[self.dtype], trust_remote_code=trust,
                                                     use_safetensors=None if options.get("allow_pickle") else True)
        return {"assistant_model": draft.to(self.device).eval()}

    def _placement(self, options: dict) -> dict:
        """accelerate's placement of a model larger than one device (engine `device_map`, `max_memory`): its layers
        fill the GPUs in turn, then CPU memory, then a temporary folder on disk, each within its `max_memory`;
        accelerate's hooks move activations between them. Inputs go to self.device, where the embeddings go first."""
        self._offload = None
        if "device_map" not in options:
            return {}
        self._offload = tempfile.TemporaryDirectory(prefix="bench-offload-")
        return {"device_map": options["device_map"], "max_memory": options.get("max_memory"),
                "offload_folder": self._offload.name}

    def _compile_decoding(self) -> None:
        """torch.compile (inductor) of the decoding forward pass. transformers compiles it inside generate() when the
        KV cache has a static shape, on every device once asked to (by default only on accelerators); the first
        generate() pays the compilation, which the warm-up runs absorb."""
        from transformers.generation import CompileConfig

        config = CompileConfig(mode="default")  # "reduce-overhead" means CUDA graphs, which CPUs do not have
        config._compile_all_devices = True
        self.model.generation_config.compile_config = config
        self.cache_implementation = "static"

    def info(self) -> BackendInfo:
        placed = getattr(self.model, "hf_device_map", None)
        return BackendInfo(
            backend=self.name,
            backend_version=transformers.__version__,
            device=self.device,
            device_name=device_name(self.device),
            dtype=self.dtype,
            extra={
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "torch_threads": torch.get_num_threads(),
                "attn_implementation": self.model.config._attn_implementation,
                "model_class": type(self.model).__name__,
                "total_params": sum(p.numel() for p in self.model.parameters()),
                "context_window": getattr(self.model.config.get_text_config(), "max_position_embeddings", None),
                # With a device map: how many of the model's modules went to each GPU, the CPU and the disk.
                "device_map": dict(Counter(map(str, placed.values()))) if placed else None,
            },
        )

    def prompt_token_pool(self) -> list[int]:
        vocab = min(len(self.tokenizer), self.model.config.get_text_config().vocab_size)
        special = set(self.tokenizer.all_special_ids)
        return [i for i in range(vocab) if i not in special]

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate(self, prompts: list[list[int]], new_tokens: int, speculate: bool = True) -> Generation:
        """Greedy generation of exactly `new_tokens` per prompt, timed per token; with the engine's speculation
        (unless `speculate` is False), also the model's steps and the drafts it checked."""
        speculation = self.speculation if speculate else {}
        if speculation and len(prompts) != 1:
            raise ConfigError(f"speculative decoding takes one sequence at a time, not a batch of {len(prompts)}")
        input_ids, attention_mask = self._left_pad(prompts)
        clock = _TokenClock(self.device, input_ids.shape[1])
        drafts = _DraftCounter(self.model) if speculation else None
        synchronize(self.device)
        t_send = time.perf_counter()
        with torch.inference_mode(), drafts or contextlib.nullcontext():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                # A fixed output length: min = max new tokens, so EOS cannot end a sequence early.
                min_new_tokens=new_tokens,
                max_new_tokens=new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self._pad_id,
                cache_implementation=self.cache_implementation,
                stopping_criteria=StoppingCriteriaList([clock]),
                return_dict_in_generate=True,
                use_cache=True,
                **speculation,
            )
        new_ids = out.sequences[:, input_ids.shape[1]:].tolist()
        return Generation(new_ids, t_send, clock.token_times, _cache_bytes(output_cache(out)),
                          steps=len(clock.step_times) if speculation else None,
                          draft_tokens=drafts.drafted if drafts else None)

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self._loglikelihood_tokens(self.tokens.pairs(requests))

    def loglikelihood_rolling(self, texts: list[str]) -> list[tuple[float, int]]:
        window = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return self.tokens.rolling(texts, window, self._loglikelihood_tokens)

    def _loglikelihood_tokens(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        # The model sees all but the last token of context + continuation. Requests whose inputs are equal (the
        # choices of one question when each is a single token) share one forward pass.
        inputs: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for index, (context_ids, continuation_ids) in enumerate(pairs):
            whole = context_ids + continuation_ids
            inputs.setdefault(tuple(whole[:-1]), []).append((index, continuation_ids))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        for shared, members in self._prefix_groups(inputs):
            prefix_cache = self._prefix_cache(list(members[0][0][:shared])) if shared else None
            if prefix_cache is None:
                shared = 0
            # Longest first, so a batch holds inputs of similar length and padding stays small.
            members.sort(key=lambda item: -len(item[0]))
            start = 0
            while start < len(members):
                size = max(1, self.batch_tokens // max(len(members[start][0]), 1))  # the prefix counts too
                batch = members[start:start + size]
                start += len(batch)
                self._score_batch(batch, shared, prefix_cache, results)
        return results

    def _prefix_groups(self, inputs: dict) -> list[tuple[int, list]]:
        """The inputs as (shared prefix length, members) groups; a group's shared prefix is computed once. In token
        order, neighbours whose common prefix is at least as long as the longest one's own part (a subject's
        few-shot examples, one question's cloze choices) form a group. The rest (0-shot questions: a subject's header
        is shorter than its questions, and batching them all together beats sharing it) form one more group, which
        shares what all of them begin with (the part of the header common to every subject)."""

        def own_limit(item) -> int:  # the positions that predict a continuation are never part of a shared prefix
            tokens, group = item
            return len(tokens) - max(len(cont) for _, cont in group)

        groups, unshared = [], []
        members, shared, longest = [], 0, 0

        def close():
            if len(members) > 1:
                groups.append((shared, members))
            else:
                unshared.extend(members)

        for item in sorted(inputs.items()):
            tokens = item[0]
            if members:
                common = min(shared, own_limit(item), common_prefix_length([members[-1][0], tokens]))
                if self.share_prefixes and common >= MIN_SHARED_PREFIX and 2 * common >= max(longest, len(tokens)):
                    members.append(item)
                    shared, longest = common, max(longest, len(tokens))
                    continue
                close()
            members, shared, longest = [item], own_limit(item), len(tokens)
        close()
        if unshared:
            common = min(common_prefix_length([tokens for tokens, _ in unshared]), *map(own_limit, unshared))
            worth = self.share_prefixes and len(unshared) > 1 and common >= MIN_SHARED_PREFIX
            groups.append((common if worth else 0, unshared))
        return groups

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]

    def generate_text(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy completions, cut at the first stop string; batched by length, longest first.

        A token prefix that every prompt shares (a task's few-shot examples) is computed once: its KV cache is
        copied into each batch, and each row is laid out as prefix, padding, its own suffix, with the padding masked
        and positions counted over real tokens only, so every row sees what it would see alone."""
        encoded = [self.tokens.encode(prompt) for prompt in prompts]
        # Every row keeps at least one token of its own, the one generation starts from.
        shared = min(common_prefix_length(encoded), min(len(ids) for ids in encoded) - 1) if self.share_prefixes else 0
        prefix_cache = self._prefix_cache(encoded[0][:shared]) if shared >= MIN_SHARED_PREFIX else None
        if prefix_cache is None:
            shared = 0
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        completions = [""] * len(prompts)
        for start in range(0, len(order), self.generation_batch_size):
            batch = order[start:start + self.generation_batch_size]
            suffix_ids, suffix_mask = self._left_pad([encoded[i][shared:] for i in batch])
            cache = self._batch_cache(prefix_cache, len(batch)) if prefix_cache is not None else None
            prefix = torch.tensor([encoded[batch[0]][:shared]] * len(batch), dtype=torch.long, device=self.device)
            input_ids = torch.cat([prefix, suffix_ids], dim=1)
            attention_mask = torch.cat([torch.ones_like(prefix), suffix_mask], dim=1)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, **{GENERATE_CACHE: cache},
                    max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                    pad_token_id=self._pad_id, stop_strings=list(stop) or None, tokenizer=self.tokenizer,
                )
            for row, index in enumerate(batch):
                text = self.tokenizer.decode(out[row, input_ids.shape[1]:], skip_special_tokens=True)
                completions[index] = cut_at_stop(text, stop)
        return completions

    def _prefix_cache(self, prefix: list[int]):
        """The KV cache of `prefix` alone (batch 1), or None where the cache cannot be copied into a batch."""
        from transformers import DynamicCache

        if not hasattr(DynamicCache, "batch_repeat_interleave"):
            return None
        cache = DynamicCache()
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([prefix], device=self.device), **{cache_argument(self.model): cache},
                       use_cache=True, logits_to_keep=1)
        return cache

    def _score_batch(self, batch: list, shared: int, prefix_cache, results: list) -> None:
        """One forward pass over the batch's inputs after their `shared` prefix (whose KV cache is given). Rows are
        padded on the right: causal attention never lets a real token see the padding after it, so no attention mask
        is needed and every row's positions are its own. Logits are computed only at the positions that predict a
        continuation."""
        suffixes = [tokens[shared:] for tokens, _ in batch]
        input_ids = torch.full((len(batch), max(map(len, suffixes))), self._pad_id, dtype=torch.long)
        spans = []  # per row: the positions of its predictions, [first, end)
        for row, (suffix, (_, group)) in enumerate(zip(suffixes, batch, strict=True)):
            input_ids[row, :len(suffix)] = torch.tensor(suffix, dtype=torch.long)
            spans.append((len(suffix) - max(len(cont) for _, cont in group), len(suffix)))
        positions = sorted({p for first, end in spans for p in range(first, end)})
        where = {p: i for i, p in enumerate(positions)}
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device),
                logits_to_keep=torch.tensor(positions, device=self.device),
                **({cache_argument(self.model): self._batch_cache(prefix_cache, len(batch)), "use_cache": True}
                   if prefix_cache is not None else {"use_cache": False}),
            ).logits
        for row, ((first, end), (_, group)) in enumerate(zip(spans, batch, strict=True)):
            rows = logits[row, where[first]:where[first] + end - first]
            self._collect(torch.log_softmax(rows.float(), dim=-1), end - first, group, results)

    @staticmethod
    def _batch_cache(prefix_cache, rows: int):
        """A copy of a batch-1 prefix cache, repeated for `rows` rows."""
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        return cache

    @staticmethod
    def _collect(logprobs, keep: int, group, results) -> None:
        """Each continuation's summed log-probability and whether it is greedy, from the last `keep` positions."""
        for index, continuation_ids in group:
            rows = logprobs[keep - len(continuation_ids):]
            targets = torch.tensor(continuation_ids, device=rows.device)
            results[index] = (rows.gather(1, targets[:, None]).sum().item(),
                              bool((rows.argmax(-1) == targets).all().item()))

    def count_routes(self) -> "RouteCounter | None":
        """Counts, per MoE layer, how many tokens each expert receives while active; None for dense models."""
        # transformers' MoE families name their router modules *Router (Qwen3MoeTopKRouter, MixtralTopKRouter, ...).
        routers = [module for module in self.model.modules() if type(module).__name__.lower().endswith("router")]
        return RouteCounter(routers, self.model_shape().num_experts) if routers else None

    def model_shape(self) -> ModelShape:
        """Parameter counts as loaded; bytes per parameter from the weights' actual size (quantized ones too)."""
        shape = self._shape
        return dataclasses.replace(shape, bytes_per_param=self._weight_bytes() / shape.total_params)

    def _count_parameters(self) -> ModelShape:
        config = self.model.config.get_text_config()
        parameters = dict(self.model.named_parameters())  # tied weights appear once
        embedding = self.model.get_input_embeddings().weight
        output = self.model.get_output_embeddings()
        tied = output is not None and output.weight is embedding
        num_experts = next((getattr(config, key) for key in ("num_experts", "num_local_experts", "n_routed_experts")
                            if getattr(config, key, None)), 0)
        return ModelShape(
            total_params=sum(p.numel() for p in parameters.values()),
            bytes_per_param=embedding.element_size(),
            lookup_only_params=0 if tied else embedding.numel(),
            # Routed experts only: shared experts ("shared_expert(s)") run for every token.
            expert_params=sum(p.numel() for name, p in parameters.items() if ".experts." in name),
            num_experts=num_experts,
            experts_per_token=getattr(config, "num_experts_per_tok", 0) if num_experts else 0,
        )

    def cuda_devices(self) -> list[int]:
        """The GPUs that hold the model: those of its device map (accelerate names GPUs by index), or the current."""
        if self.device != "cuda":
            return []
        placed = getattr(self.model, "hf_device_map", None)
        return sorted({d for d in placed.values() if isinstance(d, int)}) if placed else [torch.cuda.current_device()]

    def reset_peak_memory(self) -> None:
        """Blocks that earlier phases (or cells, in a shared worker) left in torch's cache go back first, so that the
        reserved peak and NVML's reading are this phase's own, as in a fresh process."""
        gpus = self.cuda_devices()
        if gpus:
            torch.cuda.empty_cache()
        for gpu in gpus:
            torch.cuda.reset_peak_memory_stats(gpu)

    def _weight_bytes(self) -> int:
        """Bytes of every tensor of the state dict, tied ones once; quantized Linear layers keep their weights in
        packed tuples, which are counted too."""
        seen, total = set(), 0

        def add(value):
            nonlocal total
            if isinstance(value, tuple):
                for item in value:
                    add(item)
            elif isinstance(value, torch.Tensor):
                # Weights offloaded by a device map are meta tensors, all at address 0: told apart by identity.
                key = id(value) if value.is_meta else value.data_ptr()
                if key not in seen:
                    seen.add(key)
                    total += _tensor_bytes(value)

        for value in self.model.state_dict(keep_vars=True).values():
            add(value)
        return total

    def memory(self) -> dict[str, float]:
        figures = {"weights_mib": self._weight_bytes() / MIB}
        gpus = self.cuda_devices()
        if gpus:
            # Summed over the GPUs of a device map.
            figures["peak_allocated_mib"] = sum(map(torch.cuda.max_memory_allocated, gpus)) / MIB
            figures["peak_reserved_mib"] = sum(map(torch.cuda.max_memory_reserved, gpus)) / MIB
            figures.update(device_memory(gpus))
        return figures

    def close(self) -> None:
        del self.model
        if self._offload:
            self._offload.cleanup()
        if self.device == "cuda":
            torch.cuda.empty_cache()
