"""LLM2Vec on transformers 5 (ETTIN-FACTS §4): any supported decoder -> a bidirectional
sentence-embedding model, written as a sentence-transformers folder that loads without twinlm.

1. bidirectional attention through `config.is_causal = False` (twinlm.convert.bidirectional);
2. MNTP (twinlm.convert.mntp) on plain text, LoRA optional (merged back);
3. unsupervised SimCSE, mean pooling (twinlm.convert.simcse);
4. optionally a supervised contrastive stage on (anchor, positive[, negative]) rows.
Settings come from a strict recipe (`recipes/convert/llm2vec*.yaml`, `--set key=value`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twinlm.config import load as load_settings
from twinlm.config import read_yaml
from twinlm.convert import LLM2VEC_FILE
from twinlm.convert.bidirectional import check_attention, check_decoder_config, make_bidirectional
from twinlm.convert.embed_eval import causal_baselines, world_retrieval_ndcg
from twinlm.convert.mntp import resolve_mask_token, train_mntp
from twinlm.convert.simcse import contrastive_train, embedding_model, simcse_rows, supervised_rows
from twinlm.data.corpus import split_texts, world_of
from twinlm.data.sources import load_texts
from twinlm.errors import UserError
from twinlm.outputs import claim, publish_into, staging, write_json
from twinlm.recipe import load_recipe, resolve_recipe_path
from twinlm.world.generator import unlabeled_questions

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "convert"


@dataclass
class LLM2VecConfig:
    """LLM2Vec settings. Steps of 0 skip a stage."""

    # Text for MNTP and SimCSE: a source `twinlm.data.sources` reads; None: the model's own
    # pretraining data (its twinlm.yaml: the built-in world or data.source).
    data: str | None = None
    text_column: str = "text"
    max_documents: int = 20_000
    mask_token: str | None = None  # None: the tokenizer's; else "_", "eos", "add" or a literal token
    mask_ratio: float = 0.2
    mntp_steps: int = 1000
    mntp_batch: int = 32
    mntp_lr: float = 5e-5
    mntp_max_length: int = 512
    lora_r: int = 16  # 0: train all weights
    simcse_steps: int = 1000
    simcse_batch: int = 128
    simcse_lr: float = 3e-5
    simcse_max_length: int = 128
    simcse_dropout: float = 0.3
    simcse_unit: str = "document"  # document | sentence
    # Unlabeled text for SimCSE only (no MNTP): a source `twinlm.data.sources` reads (a file of
    # queries, say) or "world-questions" (the built-in world's question forms about random names).
    # In-domain query text matters when the training text has none (the world corpus has no
    # questions); it carries no answers or passages, so the model still sees no supervision.
    simcse_extra: str | None = None
    simcse_extra_count: int = 2000
    supervised: str | None = None  # (anchor, positive[, negative]) file or hub id
    supervised_steps: int = 1000
    supervised_batch: int = 64
    supervised_lr: float = 2e-5
    pooling: str = "mean"
    seed: int = 42
    attn_implementation: str = "sdpa"
    eval_people: int = 0  # >0: score world retrieval nDCG@10 of the result and the causal baselines

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise UserError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.simcse_unit not in ("document", "sentence"):
            raise UserError(f"simcse_unit={self.simcse_unit!r}; valid: document, sentence")
        if self.pooling not in ("mean", "lasttoken", "cls", "max", "weightedmean"):
            raise UserError(f"pooling={self.pooling!r}; valid: mean, lasttoken, cls, max, weightedmean")
        for name in ("mntp_steps", "simcse_steps", "supervised_steps", "lora_r", "eval_people", "simcse_extra_count"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")


def load_llm2vec_config(name_or_path: str | None, overrides: list[str]) -> LLM2VecConfig:
    data: dict[str, Any] = {}
    if name_or_path:
        data = read_yaml(resolve_recipe_path(name_or_path, RECIPES, "llm2vec recipe", "llm2vec*.yaml"))
    return load_settings(LLM2VecConfig, data, overrides)


def check_decoder_folder(model_dir: Path, cfg: LLM2VecConfig):
    """Everything that can be refused before training: returns (config, tokenizer, mask id, added)."""
    from transformers import AutoConfig, AutoTokenizer

    if not (model_dir / "config.json").exists():
        raise UserError(f"{model_dir} is not a model folder (no config.json)")
    config = AutoConfig.from_pretrained(model_dir)
    check_decoder_config(config, str(model_dir))
    check_attention(cfg.attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    mask_id, added = (None, False)
    if cfg.mntp_steps:
        mask_id, added = resolve_mask_token(tokenizer, cfg.mask_token)
    return config, tokenizer, mask_id, added


def training_texts(model_dir: Path, cfg: LLM2VecConfig) -> list[str]:
    import itertools

    if cfg.data:
        return list(itertools.islice(load_texts(cfg.data, text_column=cfg.text_column), cfg.max_documents))
    own = model_dir / "twinlm.yaml"
    if not own.exists():
        raise UserError(f"{model_dir} has no twinlm.yaml; set the training text with --set data=SOURCE")

    recipe = load_recipe(str(own))
    train, _ = split_texts(recipe, recipe.data.source)
    return list(itertools.islice(train, cfg.max_documents))


def sentences(texts: list[str]) -> list[str]:
    return [s.strip().rstrip(".") + "." for t in texts for s in t.split(". ") if len(s.split()) > 2]


WORLD_QUESTIONS = "world-questions"


def extra_simcse_texts(cfg: LLM2VecConfig) -> list[str]:
    """The `simcse_extra` texts, read before anything is written so a bad source fails early."""
    if not cfg.simcse_extra or not cfg.simcse_steps or not cfg.simcse_extra_count:
        return []
    if cfg.simcse_extra == WORLD_QUESTIONS:
        return unlabeled_questions(cfg.simcse_extra_count, seed=cfg.seed)

    return load_texts(cfg.simcse_extra, text_column=cfg.text_column, limit=cfg.simcse_extra_count)


def llm2vec(model_dir: str | Path, out: str | Path, cfg: LLM2VecConfig, overwrite: bool = False) -> dict:
    """Run the LLM2Vec stages on the decoder in `model_dir`; write a SentenceTransformer to `out`."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise UserError(f"no model folder {model_dir}")
    _, tokenizer, mask_id, added = check_decoder_folder(model_dir, cfg)
    texts = training_texts(model_dir, cfg)
    supervised = supervised_rows(cfg.supervised) if cfg.supervised and cfg.supervised_steps else None
    extra = extra_simcse_texts(cfg)
    if not texts:
        raise UserError("no training text for MNTP/SimCSE")
    claim(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    torch.manual_seed(cfg.seed)
    work = out / ".work"
    stage_dir = work / "bidirectional"

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=cfg.attn_implementation)
    if added:
        model.resize_token_embeddings(len(tokenizer))
    make_bidirectional(model)
    if cfg.mntp_steps:
        print(f"llm2vec: MNTP, {cfg.mntp_steps} steps, mask ratio {cfg.mask_ratio}, "
              f"mask token {tokenizer.convert_ids_to_tokens(mask_id)!r}, LoRA r={cfg.lora_r or 'off'}", flush=True)
        model = train_mntp(model, tokenizer, texts, mask_id, work / "mntp", steps=cfg.mntp_steps,
                           batch_size=cfg.mntp_batch, lr=cfg.mntp_lr, max_length=cfg.mntp_max_length,
                           mask_ratio=cfg.mask_ratio, lora_r=cfg.lora_r, seed=cfg.seed)
    model.config.is_causal = False
    model.save_pretrained(stage_dir)
    tokenizer.save_pretrained(stage_dir)
    del model

    st = embedding_model(stage_dir, cfg.pooling, cfg.simcse_max_length, dropout=cfg.simcse_dropout)
    if cfg.simcse_steps:
        units = sentences(texts) if cfg.simcse_unit == "sentence" else texts
        also = f" + {len(extra):,} texts of {cfg.simcse_extra}" if extra else ""
        print(f"llm2vec: unsupervised SimCSE, {cfg.simcse_steps} steps on {len(units):,} {cfg.simcse_unit}s{also}, "
              f"dropout {cfg.simcse_dropout}", flush=True)
        units = units + extra
        contrastive_train(st, simcse_rows(units), work / "simcse", steps=cfg.simcse_steps,
                          batch_size=cfg.simcse_batch, lr=cfg.simcse_lr, seed=cfg.seed)
    if supervised:
        print(f"llm2vec: supervised contrastive, {cfg.supervised_steps} steps on {len(supervised['anchor']):,} rows",
              flush=True)
        contrastive_train(st, supervised, work / "supervised", steps=cfg.supervised_steps,
                          batch_size=cfg.supervised_batch, lr=cfg.supervised_lr, seed=cfg.seed)
    # Dropout was raised for SimCSE only; the saved config keeps the decoder's own value.
    st[0].auto_model.config.attention_dropout = _original_dropout(model_dir)
    st.eval()
    meta = {"kind": "llm2vec", "source": str(model_dir.resolve()), "bidirectional": True,
            "mask_token": tokenizer.convert_ids_to_tokens(mask_id) if mask_id is not None else None,
            "config": asdict(cfg)}
    if cfg.eval_people:
        meta["retrieval_ndcg@10"] = evaluate_against_causal(st, model_dir, cfg)
    _save(st, out, meta)
    shutil.rmtree(work, ignore_errors=True)
    return meta


def evaluate_against_causal(st, model_dir: Path, cfg: LLM2VecConfig) -> dict[str, float]:
    own = model_dir / "twinlm.yaml"
    if not own.exists():
        raise UserError(f"eval_people needs the built-in world of the model's twinlm.yaml; {model_dir} has none")
    world = world_of(load_recipe(str(own)))
    scores = causal_baselines(model_dir, world, cfg.eval_people, cfg.simcse_max_length)
    scores["llm2vec"] = world_retrieval_ndcg(st, world, cfg.eval_people)
    print("world retrieval nDCG@10: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    return scores


def _original_dropout(model_dir: Path) -> float:
    return float(json.loads((model_dir / "config.json").read_text()).get("attention_dropout", 0.0))


def _save(st, out: Path, meta: dict) -> None:
    tmp = staging(out)
    st.save(str(tmp))
    saved = json.loads((tmp / "config.json").read_text())
    if saved.get("is_causal") is not False:
        raise RuntimeError("the saved config lost is_causal=False; the model would load causal")
    write_json(tmp / LLM2VEC_FILE, meta)
    publish_into(tmp, out)  # out also holds the stages' work folder until the end
