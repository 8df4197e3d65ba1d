"""`twinlm generate MODEL --prompt TEXT [--chat]`: stream a decoder's continuation to the terminal."""

from __future__ import annotations

HELP = """Generate text with a decoder (a twin decoder, an SFT/BCO result, any causal LM). Greedy by
default, --sample for sampling. --chat wraps the prompt as a user turn in the model's chat template
(twinlm's template when the tokenizer has none) and stops at the end-of-turn token. Tokens are
printed as they are produced."""


def register(sub) -> None:
    from twinlm.align.settings import GenerationSettings
    from twinlm.config import add_flags

    p = sub.add_parser("generate", help="generate text with a decoder", description=HELP)
    p.add_argument("model", help="decoder folder or hub id")
    p.add_argument("--prompt", required=True, help="text to continue (or, with --chat, the user's message)")
    add_flags(p, GenerationSettings)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from dataclasses import asdict

    from twinlm.align.generate import generate
    from twinlm.align.settings import GenerationSettings
    from twinlm.config import from_flags

    settings = from_flags(GenerationSettings, args)
    generate(args.model, args.prompt, **asdict(settings), stream=sys.stdout)
    return 0
