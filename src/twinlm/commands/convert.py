"""`twinlm convert decoder-to-encoder | encoder-to-decoder | llm2vec`: turn one model into another."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from twinlm.commands.common import add_output_args
from twinlm.config import add_flags, from_flags
from twinlm.errors import UserError

HELP = """Convert a model. decoder-to-encoder / encoder-to-decoder map a twin's weights exactly into
the other twin's class and continue training with the other objective (Ettin's cross-objective
recipe: warmup then linear decay to 0.02x, fresh optimizer, a token budget). llm2vec turns any
supported decoder into a bidirectional sentence-embedding model (MNTP, then unsupervised SimCSE)."""

CROSS_HELP = """Writes DIR as a plain Hugging Face folder of the target class with twinlm.yaml (the
continued-training recipe), conversion.json ({"kind": "cross-objective", "from", "to", ...}),
metrics.jsonl and a model card. Data: the source model's twinlm.yaml, or --recipe. Checkpoints are
written every training.save_every steps; --resume continues an interrupted conversion from the
last one."""

LLM2VEC_HELP = """Writes DIR as a sentence-transformers folder (bidirectional through config.is_causal=false,
loads with SentenceTransformer(DIR) without twinlm) plus llm2vec.json. Supported decoders:
ModernBertDecoder, Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma3 (text); sdpa attention only.
Stages: MNTP, then unsupervised SimCSE on the training text's sentences (plus unlabeled query text
from --set simcse_extra=FILE|world-questions), then an optional supervised stage
(--set supervised=pairs.jsonl). --set eval_people=N scores world retrieval nDCG@10 against the
same decoder used causally."""


@dataclass
class CrossSettings:
    """What a cross-objective conversion varies beyond its recipe (the keywords of `cross_train`)."""

    tokens: int | None = field(default=None, metadata={
        "help": "token budget of the continued training (default: the recipe's last phase)"})
    objective: str | None = field(default=None, metadata={
        "help": "training objective: mlm (15%, default) or mntp for an encoder target, clm for a decoder"})
    mask_ratio: float = field(default=0.15, metadata={"help": "MLM/MNTP mask ratio"})

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens < 1:
            raise UserError(f"--tokens must be at least 1, got {self.tokens}")


def register(sub) -> None:
    p = sub.add_parser("convert", help="cross-objective conversion of twins; LLM2Vec for decoders", description=HELP)
    kinds = p.add_subparsers(dest="conversion", metavar="CONVERSION", required=True)
    for name, target in (("decoder-to-encoder", "encoder"), ("encoder-to-decoder", "decoder")):
        c = kinds.add_parser(name, help=f"map weights into the {target} class, then train with its objective",
                             description=CROSS_HELP)
        c.add_argument("model", help=f"the source {'decoder' if target == 'encoder' else 'encoder'} folder")
        add_output_args(c, "converted model")
        add_flags(c, CrossSettings)
        c.add_argument("--recipe", default=None,
                       help="recipe for the data and optimizer (default: the model folder's twinlm.yaml)")
        c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a field of that recipe (repeatable)")
        c.add_argument("--resume", action="store_true",
                       help="continue an interrupted conversion in --out from its last checkpoint (same "
                       "arguments as the interrupted run)")
        c.set_defaults(func=run_cross, target=target)
    lv = kinds.add_parser("llm2vec", help="decoder -> bidirectional sentence-embedding model",
                          description=LLM2VEC_HELP)
    lv.add_argument("model", help="a decoder folder (or hub id already downloaded to a folder)")
    add_output_args(lv, "sentence-transformers model")
    lv.add_argument("--recipe", default="llm2vec",
                    help="llm2vec settings: a YAML file or shipped name (llm2vec, llm2vec-cpu); default llm2vec")
    lv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set mntp_steps=200 --set lora_r=0 --set supervised=pairs.jsonl")
    lv.add_argument("--mask-token", default=None,
                    help="MNTP mask token when the tokenizer has none: _ (underscore), eos, add, or a literal token")
    lv.add_argument("--attn-implementation", default=None, help="attention implementation (only sdpa works)")
    lv.set_defaults(func=run_llm2vec)


def run_cross(args) -> int:
    from twinlm.convert.cross import cross_train

    settings = from_flags(CrossSettings, args)
    meta = cross_train(args.model, args.out, args.target, **asdict(settings), recipe=args.recipe,
                       overrides=args.overrides, overwrite=args.overwrite, resume=args.resume)
    print(f"model: {args.out} ({meta['from']} -> {meta['to']}, {meta['objective']})")
    return 0


def run_llm2vec(args) -> int:
    from pathlib import Path

    from twinlm.convert.llm2vec import llm2vec, load_llm2vec_config

    overrides = list(args.overrides)
    if args.mask_token is not None:
        overrides.append(f"mask_token={args.mask_token}")
    if args.attn_implementation is not None:
        overrides.append(f"attn_implementation={args.attn_implementation}")
    cfg = load_llm2vec_config(args.recipe, overrides)
    # A literal mask token such as "_" must stay a string; YAML parsing of --set could change it.
    if args.mask_token is not None:
        cfg.mask_token = args.mask_token
    llm2vec(Path(args.model), Path(args.out), cfg, overwrite=args.overwrite)
    print(f"model: {args.out} (load with SentenceTransformer({str(args.out)!r}))")
    return 0
