"""Inference engines behind one interface (harness.backends.base.Backend), imported only when used."""

from harness.registry import Registry

BACKENDS = Registry(
    "backend",
    {
        "transformers": "harness.backends.transformers:TransformersBackend",
        "openai": "harness.backends.openai:OpenAIBackend",
        "vllm": "harness.backends.vllm:VllmBackend",
        "llamacpp": "harness.backends.llamacpp:LlamaCppBackend",
    },
)
