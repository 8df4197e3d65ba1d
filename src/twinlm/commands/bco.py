"""`twinlm bco MODEL --data ROWS --out DIR`: align a decoder on unpaired thumbs-up/down data."""

from __future__ import annotations

from twinlm.commands.common import add_align_args, run_alignment

HELP = """Binary classifier optimization (BCO; twinlm's own trainer on the HF Trainer). ROWS (jsonl, json,
parquet, save_to_disk folder or hub id) have 'prompt', 'completion' and a boolean 'label' (true =
desirable), plain text or conversational (lists of {role, content}; a chat template is applied).
Reward r = beta * (log pi - log pi_ref) over completion tokens; delta = running mean of training
rewards (saved in every checkpoint). --udm-embedder weights undesirable rows by UDM density
ratios. Writes DIR (plain HF folder, bco_state.json with delta, udm_classifier.safetensors with
UDM), DIR/bco.json with metrics, DIR/checkpoints for --resume. Logged per step: rewards/desirable,
rewards/undesirable, rewards/margins, delta, logps/*, udm/accuracy. --eval-data (rows like ROWS, or
preference rows prompt/chosen/rejected) reports before and after training: the held-out BCO loss
(ln 2 = 0.6931 before training by construction), the reward margin, and the preference accuracy
(share of prompts whose desirable completion the model finds more likely than an undesirable one).
ROWS: --data. With --lora the base model (adapters off) is the reference, and the learning rate
defaults to a LoRA-scale one (see --lr)."""


def register(sub) -> None:
    from twinlm.align.settings import BCOSettings

    p = sub.add_parser("bco", help="align a decoder with BCO on thumbs-up/down rows", description=HELP)
    add_align_args(p, BCOSettings, "aligned model")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.align.bco import BCOSettings, bco

    metrics, held = run_alignment(args, BCOSettings, bco)
    print(f"bco: train loss {metrics.get('train_loss', float('nan')):.4f}, delta {metrics['delta']:.4f}{held}; "
          f"model: {args.out}")
    return 0
