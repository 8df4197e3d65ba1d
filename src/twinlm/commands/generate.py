"""`twinlm generate MODEL --prompt TEXT [--chat]`: stream a decoder's continuation to the terminal."""

from __future__ import annotations

HELP = """Generate text with a decoder (a twin decoder, an SFT/BCO result, any causal LM). Greedy by
default, --sample for sampling. --chat wraps the prompt as a user turn in the model's chat template
(twinlm's template when the tokenizer has none) and stops at the end-of-turn token. Tokens are
printed as they are produced."""


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text with a decoder", description=HELP)
    p.add_argument("model", help="decoder folder or hub id")
    p.add_argument("--prompt", required=True, help="text to continue (or, with --chat, the user's message)")
    p.add_argument("--chat", action="store_true", help="apply the chat template (prompt = user turn)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="at most this many new tokens (default 64)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from twinlm.align.generate import generate

    generate(args.model, args.prompt, chat=args.chat, max_new_tokens=args.max_new_tokens, sample=args.sample,
             temperature=args.temperature, top_p=args.top_p, seed=args.seed, stream=sys.stdout)
    return 0
