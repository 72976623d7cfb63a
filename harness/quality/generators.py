"""Tasks generated in the project with their own seeded RNG: the same seed gives the same examples everywhere."""

import random

NAMES = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena"]
ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stamps", "shells", "cards"]


def arithmetic(seed: int, count: int) -> list[dict]:
    """Two-step word problems (add then subtract, or multiply then add) with integer answers and a worked
    rationale (for step-by-step prompting)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        if rng.random() < 0.5:
            c = rng.randint(1, a + b)
            question = (f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. "
                        f"How many {item} does {name} have now?")
            answer = a + b - c
            rationale = (f"{name} starts with {a}. {a} + {b} = {a + b}. {a + b} - {c} = {answer}. "
                         f"The answer is {answer}.")
        else:
            a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 20)
            question = f"{name} buys {a} boxes of {b} {item} and already had {c}. How many {item} are there in all?"
            answer = a * b + c
            rationale = f"{a} boxes of {b} is {a} * {b} = {a * b}. {a * b} + {c} = {answer}. The answer is {answer}."
        examples.append({"question": question, "answer": str(answer), "rationale": rationale})
    return examples


FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def passkey(seed: int, count: int, filler_repeats: int = 20) -> list[dict]:
    """Passkey retrieval: a five-digit key hidden at a random depth of repeated filler text (~20 tokens a repeat)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        key = str(rng.randint(10000, 99999))
        depth = rng.randint(0, filler_repeats)
        text = (FILLER * depth + f"The pass key is {key}. Remember it. {key} is the pass key. "
                + FILLER * (filler_repeats - depth))
        examples.append({"question": f"{text}\nWhat is the pass key?", "answer": key})
    return examples


GENERATORS = {"arithmetic": arithmetic, "passkey": passkey}
