"""Requests as every backend sends them: the token sequences that log-likelihood requests are scored on, formed as
lm-evaluation-harness forms them (each backend then only scores (context ids, continuation ids) pairs), and
completions cut at their first stop string."""

from collections.abc import Callable

Pair = tuple[list[int], list[int]]
# At most this many tokens of context window for rolling (perplexity) scoring.
MAX_ROLLING_WINDOW = 2048


class RequestTokens:
    """A Hugging Face tokenizer's encoding of requests: a BOS token first where the tokenizer adds one, and a
    document boundary token (BOS, else EOS) where there is nothing to condition on."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.add_bos = bool(getattr(tokenizer, "add_bos_token", False)) and tokenizer.bos_token_id is not None
        self.boundary = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return [self.tokenizer.bos_token_id, *ids] if self.add_bos else ids

    def pair(self, context: str, continuation: str) -> Pair:
        """Trailing spaces of the context move to the continuation, and the continuation is what encoding the whole
        adds after the context."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        context_ids = self.encode(context)
        return context_ids or [self.boundary], whole[len(context_ids):]

    def pairs(self, requests: list[tuple[str, str]]) -> list[Pair]:
        return [self.pair(context, continuation) for context, continuation in requests]

    def rolling(self, texts: list[str], window: int | None,
                score: Callable[[list[Pair]], list[tuple[float, bool]]]) -> list[tuple[float, int]]:
        """Log-likelihood of each whole text and its token count. The first token is predicted from the boundary
        token; a text longer than the window (the most tokens a scored pair may hold, at most MAX_ROLLING_WINDOW) is
        scored in chunks of half a window, each conditioned on the half window of tokens before it. `score` scores
        the pairs."""
        step = min(window or MAX_ROLLING_WINDOW, MAX_ROLLING_WINDOW) // 2
        pairs, owners = [], []
        for index, text in enumerate(texts):
            tokens = self.tokenizer(text, add_special_tokens=False).input_ids
            for start in range(0, len(tokens), step):
                pairs.append((tokens[max(0, start - step):start] or [self.boundary], tokens[start:start + step]))
                owners.append(index)
        totals = [[0.0, 0] for _ in texts]
        for owner, (_, target), (logprob, _) in zip(owners, pairs, score(pairs), strict=True):
            totals[owner][0] += logprob
            totals[owner][1] += len(target)
        return [(logprob, count) for logprob, count in totals]


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The text before the first of the stop strings that it holds."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[:min(cuts)] if cuts else text
