"""A toy preference task from the built-in world, with a known right answer, to measure BCO.

Prompt "<name> was born in <city>," whose desirable completion is the city's true country and
whose undesirable completion a wrong country. The city -> country map is shared by everyone born
in that city, so what BCO teaches on some people's prompts carries over to held-out people:
preference accuracy on held-out prompts measures generalisation, not memorised rows.
"""

from __future__ import annotations

import random

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from twinlm.align.bco_data import BCOCollator, encode_example, sequence_logps
from twinlm.world.generator import Person, World


def country_pairs(world: World, people: list[Person], seed: int = 0, confusion: bool = True) -> list[dict]:
    """One (prompt, correct, wrong) triple per person.

    confusion=True: the wrong country is a fixed per-city confusion (the next country in the
    world's list), a systematic error as a model makes them, so feedback on it carries over to
    other people born in that city. False: a random wrong country per prompt.
    """
    rng = random.Random(f"country-pairs-{seed}")
    countries = world.countries
    out = []
    for person in people:
        country = world.country_of(person.birth_city)
        if confusion:
            wrong = countries[(countries.index(country) + 1) % len(countries)]
        else:
            wrong = rng.choice([c for c in countries if c != country])
        out.append({"prompt": f"{person.name} was born in {person.birth_city},",
                    "correct": f" {country}.", "wrong": f" {wrong}."})
    return out


def unpaired_rows(pairs: list[dict], seed: int = 0) -> list[dict]:
    """BCO rows: each prompt appears once, with its correct or its wrong completion (unpaired data)."""
    rng = random.Random(f"unpaired-{seed}")
    rows = []
    for pair in pairs:
        good = rng.random() < 0.5
        rows.append({"prompt": pair["prompt"], "completion": pair["correct" if good else "wrong"], "label": good})
    return rows


@torch.no_grad()
def preference_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[dict],
                        batch_size: int = 32) -> float:
    """Share of pairs where log pi(correct | prompt) > log pi(wrong | prompt)."""
    was_training = model.training
    model.eval()
    collate = BCOCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    wins = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        scores = []
        for key in ("correct", "wrong"):
            feats = [dict(encode_example(p["prompt"], p[key], tokenizer, 512, 256), label=True) for p in chunk]
            batch = {k: v.to(device) for k, v in collate(feats).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            scores.append(sequence_logps(logits, batch["input_ids"], batch["completion_mask"]).cpu())
        wins += int((scores[0] > scores[1]).sum())
    model.train(was_training)
    return wins / len(pairs)
