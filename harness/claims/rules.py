"""The verdict rules: each reads rows selected by name, and its thresholds from its claim in tasks/claims.yaml.

Every rule can reach every outcome: supported, not supported, inconclusive (the interval reaches the threshold) and
skipped (this run cannot test the claim, with the reason). Figures are compared through their 95% intervals
(harness/measure/intervals.py); figures compared with each other take Bonferroni-adjusted levels.
"""

from harness.claims.core import Claim, Verdict, decide, find, models, profile_spec, select
from harness.measure.intervals import Interval, difference, interval, joint_level, ratio


def efficiency_steps(claim: Claim, rows: list[dict]) -> Verdict:
    """Per-stream decode (batch 1) under each named engine setting against the named baseline. A setting counts
    only if its perplexity stays within `max_perplexity_ratio` of the baseline's; supported when a counted setting's
    speed-up interval lies above `min_speedup`, not supported when every counted one lies below. Batching is
    reported beside it as its own axis (aggregate throughput and per-sequence TPOT), never as a step."""
    p = claim.params
    level = joint_level(2)
    base_row = find(rows, "decode_tok_s", step=p["baseline"], scenario=p["scenario"],
                    where={"batch_size": p["batch_size"]})
    if base_row is None:
        return Verdict(claim, "skipped", f"no {p['scenario']} decode row of the baseline setting "
                                         f"'{p['baseline']}' at batch {p['batch_size']} (the claims suite has it)")
    model, base = base_row["model"], interval(base_row, level)
    base_quality = find(rows, "perplexity", step=p["baseline"], model=model, task=p["quality_task"])
    if base_quality is None:
        return Verdict(claim, "skipped", f"no {p['quality_task']} perplexity of the baseline '{p['baseline']}', so "
                                         "no setting's quality can be checked")
    figures = {f"decode_tok_s[{p['baseline']}]": base.text(1), f"perplexity[{p['baseline']}]":
               round(base_quality["value"], 2)}
    counted, measured = _quality_preserving_speedups(p, rows, model, base, base_quality["value"], figures)
    figures.update(_batching_axis(rows, p["batching"], model, base))
    figures.update(_engine_axis(rows, p["engines"], model))
    if not counted:
        if not measured:
            return Verdict(claim, "skipped", f"no setting other than the baseline was measured on {model}", figures)
        return Verdict(claim, "not supported", f"no setting kept perplexity within {p['max_perplexity_ratio']}x "
                                               f"the baseline's", figures)
    outcomes = {step: decide(s, p["min_speedup"], "above") for step, s in counted.items()}
    best = max(counted, key=lambda step: counted[step].value)
    verdict = ("supported" if "supported" in outcomes.values() else
               "not supported" if set(outcomes.values()) == {"not supported"} else "inconclusive")
    figures["best_quality_preserving_setting"] = best
    return Verdict(claim, verdict, f"{model}: best quality-preserving setting '{best}' decodes "
                                   f"{counted[best].text()}x the baseline per stream (the claim: at least "
                                   f"{p['min_speedup']}x; perplexity within {p['max_perplexity_ratio']}x)", figures)


def _quality_preserving_speedups(p: dict, rows: list[dict], model: str, base: Interval, base_perplexity: float,
                                 figures: dict) -> tuple[dict[str, Interval], int]:
    """Each named setting's speed-up over the baseline, into `figures`; returns those whose perplexity stays within
    the tolerance (a setting without a perplexity row is not counted), and how many settings this run measured."""
    counted, measured = {}, 0
    for step in p["settings"]:
        row = find(rows, "decode_tok_s", step=step, model=model, scenario=p["scenario"],
                   where={"batch_size": p["batch_size"]})
        if row is None:
            figures[f"speedup[{step}]"] = "not in this run"
            continue
        measured += 1
        speedup = ratio(interval(row, joint_level(2)), base)
        figures[f"speedup[{step}]"] = speedup.text()
        if _quality_kept(p, rows, model, step, base_perplexity, figures):
            counted[step] = speedup
        else:
            figures[f"speedup[{step}]"] += " (not counted: quality not kept)"
    return counted, measured


def _quality_kept(p: dict, rows: list[dict], model: str, step: str, base_perplexity: float, figures: dict) -> bool:
    """A speculative step keeps quality where its output equals the model's greedy output without speculation (its
    acceptance row says; scoring never speculates, so perplexity could not tell); any other step where its
    perplexity stays within the tolerance of the baseline's."""
    accepted = find(rows, "spec_acceptance_rate", step=step, model=model, scenario=p["scenario"])
    if accepted is not None:
        same = accepted["stats"].get("output_equals_plain") is True
        figures[f"spec_acceptance_rate[{step}]"] = round(accepted["value"], 3) if accepted["value"] is not None \
            else "no drafts"
        figures[f"output_equals_plain[{step}]"] = same
        paired = find(rows, "spec_speedup", step=step, model=model, scenario=p["scenario"])
        if paired is not None:  # over the same settings without speculation, the runs paired
            figures[f"spec_speedup[{step}]"] = interval(paired).text()
        return same
    quality = find(rows, "perplexity", step=step, model=model, task=p["quality_task"])
    change = quality["value"] / base_perplexity if quality else None
    figures[f"perplexity_ratio[{step}]"] = round(change, 3) if change is not None else "no perplexity row"
    return change is not None and change <= p["max_perplexity_ratio"]


def _batching_axis(rows: list[dict], batching: dict, model: str, base: Interval) -> dict:
    """Aggregate decode throughput and per-sequence TPOT at each batch size of the batching step: a separate axis,
    beside the per-stream ladder and never counted in it."""
    figures = {}
    for row in select(rows, "decode_tok_s", step=batching["step"], model=model, scenario=batching["scenario"]):
        batch = row["params"]["batch_size"]
        tpot = find(rows, "tpot_ms", step=batching["step"], cell_id=row["cell_id"], where={"batch_size": batch})
        figures[f"batching[b{batch}] aggregate decode_tok_s"] = (
            f"{row['value']:.1f} ({row['value'] / base.value:.2f}x one stream's, summed over {batch} sequences)")
        if tpot:
            figures[f"batching[b{batch}] tpot_ms per sequence"] = round(tpot["value"], 2)
    return figures


def _engine_axis(rows: list[dict], engines: dict, model: str) -> dict:
    """The same model on each engine at the precision it runs (transformers' default dtype, llama.cpp's shipped
    quantisation): per-stream decode speed, weight bytes and the same task's score, beside the ladder and never a
    step of it. Decode is the latency scenario's at batch 1 in process, 1000 / tpot_ms of one request at a time
    through a server; an engine this run did not measure says so."""
    figures = {}
    for backend, how in engines["backends"].items():
        if how["scenario"] == "served":
            tpot = find(rows, "tpot_ms", model=model, backend=backend, scenario="served",
                        where={"concurrency": 1, "prompt_tokens": how["prompt_tokens"]})
            decode = ratio(Interval(1000.0, 1000.0, 1000.0, "exact"), interval(tpot)) if tpot else None
            speed_row = tpot
        else:
            speed_row = find(rows, "decode_tok_s", model=model, backend=backend, scenario=how["scenario"],
                             where={"batch_size": 1, "prompt_tokens": how["prompt_tokens"]})
            decode = interval(speed_row) if speed_row else None
        if decode is None:
            figures[f"engine[{backend}]"] = "not in this run"
            continue
        label = f"engine[{backend} {speed_row['dtype']}]"
        figures[f"{label} decode_tok_s"] = decode.text(1)
        weights = find(rows, "weights_mib", model=model, backend=backend, cell_id=speed_row["cell_id"])
        figures[f"{label} weights_mib"] = round(weights["value"], 1) if weights else "no row"
        score = find(rows, engines["quality_metric"], model=model, backend=backend, task=engines["quality_task"])
        figures[f"{label} {engines['quality_metric']}[{engines['quality_task']}]"] = (
            interval(score).text(3) if score else "no row")
    return figures


def moe_speed_memory(claim: Claim, rows: list[dict]) -> Verdict:
    """The first family of the claim with rows for all three models decides. Its MoE must hold about dense-total's
    weights (within `weights_tolerance`: else the family is not matched and the claim is skipped); supported when
    the MoE's decode speed lies above the point `min_position` of the way from dense-total's to dense-active's speed
    (in log ratio; 0.5: the geometric midpoint), not supported when below."""
    p = claim.params
    for names in p["families"]:
        found = {role: (find(rows, "decode_tok_s", model=model, scenario=p["scenario"], where=p["where"]),
                        find(rows, "weights_mib", model=model, scenario=p["scenario"]))
                 for role, model in names.items()}
        if all(speed and weights for speed, weights in found.values()):
            return _moe_verdict(claim, rows, names, found)
    wanted = "; ".join(", ".join(names.values()) for names in p["families"])
    return Verdict(claim, "skipped", f"no family has {p['scenario']} rows for all its models in this run ({wanted})")


def _moe_verdict(claim: Claim, rows: list[dict], names: dict, found: dict) -> Verdict:
    p, level = claim.params, joint_level(3)
    speed = {role: interval(speed_row, level) for role, (speed_row, _) in found.items()}
    weights = {role: weights_row["value"] for role, (_, weights_row) in found.items()}
    figures = {f"decode_tok_s[{role}]": e.text(1) for role, e in speed.items()}
    figures.update({f"weights_mib[{role}]": round(v, 1) for role, v in weights.items()})
    for role, model in names.items():  # energy and routing beside it, where measured; the verdict follows decode
        joules = find(rows, "j_per_tok", model=model, scenario=p["scenario"], where=p["where"])
        if joules:
            figures[f"j_per_tok[{role}]"] = interval(joules).text(4)
    routing = find(rows, "expert_imbalance", model=names["moe"], scenario=p["scenario"], where=p["where"])
    if routing:
        figures["expert_imbalance[moe, worst layer]"] = round(routing["value"], 2)
    share = weights["moe"] / weights["dense_total"]
    if abs(share - 1) > p["weights_tolerance"]:
        return Verdict(claim, "skipped", f"the family is not matched: {names['moe']}'s weights are {share:.2f}x "
                                         f"{names['dense_total']}'s (tolerance {p['weights_tolerance']})", figures)
    position, total, active = p["min_position"], speed["dense_total"], speed["dense_active"]
    threshold = Interval(total.value ** (1 - position) * active.value ** position,
                         total.low ** (1 - position) * active.low ** position,
                         total.high ** (1 - position) * active.high ** position, "from the dense models' intervals")
    figures["threshold_tok_s"] = threshold.text(1)
    moe = speed["moe"]
    verdict = decide(difference(moe, threshold), 0.0, "above")
    return Verdict(claim, verdict, f"{names['moe']} decodes at {moe.text(1)} tok/s against {threshold.text(1)}, "
                                   f"{position} of the way from dense-total ({total.value:.1f}) to dense-active "
                                   f"({active.value:.1f}); its weights are {share:.2f}x dense-total's", figures)


def context_forgetting(claim: Claim, rows: list[dict]) -> Verdict:
    """Per model (the first with every length): supported when accuracy drops from the shortest to the longest
    context by more than `min_drop` beyond both intervals, not supported when by less; inconclusive also when the
    model cannot retrieve even at the shortest length (accuracy below `min_short_accuracy`)."""
    p, level = claim.params, joint_level(2)
    for model in models(rows):
        found = [find(rows, p["metric"], model=model, task=task) for task in p["tasks"]]
        if not all(found):
            continue
        figures = {f"{p['metric']}[{task}]": interval(row).text() for task, row in zip(p["tasks"], found,
                                                                                        strict=True)}
        for name in ("prefill_tok_s", "kv_cache_mib"):  # what each context length costs, from latency rows
            for row in select(rows, name, model=model, scenario="latency"):
                figures[f"{name}[{row['params']['prompt_tokens']} tokens]"] = round(row["value"], 2)
        short, long = interval(found[0], level), interval(found[-1], level)
        if short.high < p["min_short_accuracy"]:
            return Verdict(claim, "inconclusive", f"{model} does not retrieve even at {p['tasks'][0]} ({short.text()}"
                                                  f" < {p['min_short_accuracy']}), so it cannot show forgetting",
                           figures)
        drop = difference(short, long)
        figures["drop"] = drop.text()
        return Verdict(claim, decide(drop, p["min_drop"], "above"),
                       f"{model}: {p['metric']} {short.value:.2f} at {p['tasks'][0]} against {long.value:.2f} at "
                       f"{p['tasks'][-1]}, a drop of {drop.text()} (the claim: more than {p['min_drop']})", figures)
    return Verdict(claim, "skipped", f"no model has {p['metric']} rows for all of {', '.join(p['tasks'])}")


def token_overhead(claim: Claim, rows: list[dict]) -> Verdict:
    """Supported when step-by-step answers take more than `min_token_ratio` times the tokens of direct ones beyond
    the interval of the ratio, not supported when fewer; skipped unless both tasks ran under the same generation
    budget and stop strings (only the prompt may differ). With accuracy per extra token, seconds per answer and,
    where the rows carry a price, dollars per answer. A model that reasons by itself (a served window with
    reasoning_tokens: its server or its <think> block marks the thinking) is judged on its own responses first:
    tokens per response over tokens of its answer."""
    p = claim.params
    thinking = _reasoning_window(claim, rows)
    if thinking is not None:
        return thinking
    for model in models(rows):
        direct, reasoning = (find(rows, "tokens_per_answer", model=model, task=p["tasks"][role])
                             for role in ("direct", "reasoning"))
        if direct and reasoning:
            return _token_verdict(claim, rows, model, direct, reasoning)
    return Verdict(claim, "skipped", f"no model has tokens_per_answer for both {p['tasks']['direct']} and "
                                     f"{p['tasks']['reasoning']}")


def _reasoning_window(claim: Claim, rows: list[dict]) -> Verdict | None:
    """The verdict on the first served window whose responses reasoned: (reasoning + answer tokens) / answer tokens,
    the interval from the two means' (each at the Bonferroni level of two), against `min_token_ratio`."""
    for thought in select(rows, "reasoning_tokens", scenario="served"):
        answer = find(rows, "answer_tokens", cell_id=thought["cell_id"], where={"load": thought["params"]["load"]})
        if answer is None or not answer["value"]:
            continue
        level = joint_level(2)
        thinking, answering = interval(thought, level), interval(answer, level)
        share = ratio(thinking, answering)
        tokens = Interval(share.value + 1, share.low + 1, share.high + 1, f"1 + {share.method}")
        figures = {"reasoning_tokens": thinking.text(1), "answer_tokens": answering.text(1), "ratio": tokens.text(),
                   "load": thought["params"]["load"]}
        for name in ("ttft_ms", "ttfa_ms"):
            timed = find(rows, name, cell_id=thought["cell_id"], where={"load": thought["params"]["load"]})
            if timed:
                figures[name] = round(timed["value"], 1)
        return Verdict(claim, decide(tokens, claim.params["min_token_ratio"], "above"),
                       f"{thought['model']}: {tokens.value:.1f}x the tokens of its answers per response "
                       f"({thought['value']:.1f} reasoning, {answer['value']:.1f} answer; the claim: more than "
                       f"{claim.params['min_token_ratio']}x)", figures)
    return None


def _budget(row: dict) -> tuple | None:
    stats = row["stats"]
    return (stats["max_new_tokens"], tuple(stats["stop"])) if "max_new_tokens" in stats else None


def _token_verdict(claim: Claim, rows: list[dict], model: str, direct: dict, reasoning: dict) -> Verdict:
    p, level = claim.params, joint_level(2)
    budgets = _budget(direct), _budget(reasoning)
    if None in budgets or budgets[0] != budgets[1]:
        said = "not recorded in the rows" if None in budgets else f"{budgets[0]} against {budgets[1]}"
        return Verdict(claim, "skipped", f"the two tasks' generation budgets differ or are unknown ({said}): "
                                         "token counts are not like for like")
    d, r = interval(direct, level), interval(reasoning, level)
    tokens = ratio(r, d)
    figures = {"tokens_direct": d.text(1), "tokens_reasoning": r.text(1), "ratio": tokens.text()}
    price = profile_spec(rows, "price_usd_per_hour")
    accuracy = {}
    for role, task in p["tasks"].items():
        match = find(rows, "exact_match", model=model, task=task)
        seconds = find(rows, "eval_s", model=model, task=task)
        if match:
            accuracy[role] = match["value"]
            figures[f"exact_match[{role}]"] = interval(match).text(3)
        if seconds:  # the task's scoring time over its questions (batched generation)
            per_answer = seconds["value"] / seconds["params"]["limit"]
            figures[f"seconds_per_answer[{role}]"] = round(per_answer, 3)
            if price:
                figures[f"usd_per_answer[{role}]"] = round(per_answer * price / 3600, 8)
    if len(accuracy) == 2 and r.value != d.value:
        figures["exact_match_per_extra_token"] = round((accuracy["reasoning"] - accuracy["direct"]) /
                                                       (r.value - d.value), 5)
    return Verdict(claim, decide(tokens, p["min_token_ratio"], "above"),
                   f"{model}: {r.value:.1f} tokens per step-by-step answer against {d.value:.1f} direct, "
                   f"{tokens.text()}x (the claim: more than {p['min_token_ratio']}x)", figures)


def cost_per_token(claim: Claim, rows: list[dict]) -> Verdict:
    """Batch-1 decode cost (latency rows at the claim's prompt length, default engine settings) of every model:
    supported when every model's interval lies under `usd_per_mtok`, not supported when any lies above. The best
    batched or served cost is a second, labelled figure; prices are the ones the rows carry."""
    p = claim.params
    costs = {}
    for row in select(rows, "usd_per_mtok", scenario=p["scenario"], where=p["where"]):
        costs.setdefault(row["model"], row)
    if not costs:
        price = profile_spec(rows, "price_usd_per_hour")
        profile = next((row.get("profile") for row in rows if row.get("profile")), None)
        why = (f"the rows carry no price per hour (profile {profile})" if price is None else
               f"no batch-{p['where'].get('batch_size')} {p['scenario']} cost rows in this run")
        return Verdict(claim, "skipped", why)
    level = joint_level(len(costs))
    estimates = {model: interval(row, level) for model, row in costs.items()}
    figures = {f"usd_per_mtok[{model}, batch 1]": e.text(4) for model, e in estimates.items()}
    figures.update(_best_batched_cost(rows))
    outcomes = {model: decide(e, p["usd_per_mtok"], "below") for model, e in estimates.items()}
    verdict = ("not supported" if "not supported" in outcomes.values() else
               "supported" if set(outcomes.values()) == {"supported"} else "inconclusive")
    worst = max(estimates, key=lambda model: estimates[model].value)
    return Verdict(claim, verdict, f"highest batch-1 cost ${estimates[worst].text(4)} per million output tokens "
                                   f"({worst}) against ${p['usd_per_mtok']}", figures)


def _best_batched_cost(rows: list[dict]) -> dict:
    """The lowest cost per million tokens of batched generation (throughput rows) and of served load (output tok/s
    at the row's price), per model: what the same hardware gives when it is kept busy."""
    best = {}
    for row in select(rows, "usd_per_mtok", scenario="throughput"):
        label = f"batch {row['params']['batch_size']}"
        best.setdefault(row["model"], []).append((row["value"], label))
    for row in select(rows, "output_tok_s", scenario="served"):
        price = (row.get("profile_specs") or {}).get("price_usd_per_hour")
        if price and row["value"]:
            best.setdefault(row["model"], []).append((price / 3600 / row["value"] * 1e6,
                                                      f"served {row['params'].get('load')}"))
    return {f"best_batched_usd_per_mtok[{model}]": f"{min(found)[0]:.4f} ({min(found)[1]})"
            for model, found in best.items()}


def interconnect(claim: Claim, rows: list[dict]) -> Verdict:
    """Decode speed at the named tensor-parallel steps (vLLM, the `interconnect` suite) beside the all-reduce bus
    bandwidth: supported when the largest split decodes below `efficiency_below` x n x the single-GPU speed beyond
    the interval, not supported when above."""
    p = claim.params
    busbw = {row["params"]["size_mib"]: row for row in select(rows, "allreduce_busbw_gbps")}
    if not busbw:
        gpus = max((row.get("fingerprint", {}).get("gpu_count") or 0 for row in rows), default=0)
        return Verdict(claim, "skipped", f"needs more than one GPU; this machine has {gpus}" if gpus < 2 else
                       "no all-reduce figure was measured (resolved_config.yaml says why)")
    figures = {f"allreduce_busbw_gbps[{size} MiB]": round(row["value"], 1) for size, row in sorted(busbw.items())}
    figures["datasheet_interconnect"] = profile_spec(rows, "interconnect") or "not in the rows"
    single = find(rows, "decode_tok_s", step=p["single_step"], scenario="latency")
    splits = [row for step in p["split_steps"] if single
              for row in select(rows, "decode_tok_s", step=step, scenario="latency", model=single["model"])]
    if not single or not splits:
        return Verdict(claim, "skipped", f"no decode rows at steps {p['single_step']} and one of "
                                         f"{', '.join(p['split_steps'])}: run the `interconnect` suite", figures)
    split = max(splits, key=lambda row: row["backend_info"]["tensor_parallel_size"])
    n = split["backend_info"]["tensor_parallel_size"]
    level = joint_level(2)
    one, many = interval(single, level), interval(split, level)
    ideal = Interval(one.value * n, one.low * n, one.high * n, one.method)
    efficiency = ratio(many, ideal)
    figures.update({f"decode_tok_s[{p['single_step']}]": one.text(), f"decode_tok_s[tp{n}]": many.text(),
                    f"scaling_efficiency[tp{n}]": efficiency.text(3)})
    return Verdict(claim, decide(efficiency, p["efficiency_below"], "below"),
                   f"tensor parallel {n} decodes {efficiency.text()} of {n}x the single-GPU speed (the claim: below "
                   f"{p['efficiency_below']}); all-reduce bus bandwidth {busbw[max(busbw)]['value']:.1f} GB/s at "
                   f"{max(busbw)} MiB", figures)
