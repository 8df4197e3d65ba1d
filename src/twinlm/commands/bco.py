"""`twinlm bco MODEL --data ROWS --out DIR`: align a decoder on unpaired thumbs-up/down data."""

from __future__ import annotations

from twinlm.commands.common import add_output_args, add_schedule_args

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
(share of prompts whose desirable completion the model finds more likely than an undesirable one)."""


def register(sub) -> None:
    p = sub.add_parser("bco", help="align a decoder with BCO on thumbs-up/down rows", description=HELP)
    p.add_argument("model", help="decoder folder or hub id (the policy)")
    p.add_argument("--data", required=True, help="rows with prompt, completion, label (bool)")
    p.add_argument("--eval-data", default=None,
                   help="held-out rows (prompt/completion/label or prompt/chosen/rejected): loss, reward margin and "
                        "preference accuracy before and after training")
    add_output_args(p, "aligned model")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (delta and UDM restored)")
    p.add_argument("--beta", type=float, default=0.1, help="reward scale (default 0.1)")
    add_schedule_args(p, lr=5e-7)
    p.add_argument("--max-length", type=int, default=512, help="max prompt + completion tokens (default 512)")
    p.add_argument("--ref-model", default=None,
                   help="reference model (default: a frozen copy of MODEL; with --lora, MODEL with adapters off)")
    p.add_argument("--precompute-ref", action="store_true", help="reference log-probs once up front, then drop it")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters; the base is the reference")
    p.add_argument("--udm-embedder", default=None,
                   help="enable UDM with this prompt embedder (a twinlm encoder folder or sentence-transformers model)")
    p.add_argument("--prompt-sample-size", type=int, default=1024, help="UDM: prompts per class to fit on")
    p.add_argument("--min-density-ratio", type=float, default=0.5, help="UDM weight lower clip (default 0.5)")
    p.add_argument("--max-density-ratio", type=float, default=10.0, help="UDM weight upper clip (default 10)")
    p.add_argument("--router-aux-loss-coef", type=float, default=0.001, help="MoE router loss weight (default 0.001)")
    p.add_argument("--save-steps", type=int, default=200, help="checkpoint every N steps (default 200)")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.align.bco import BCOSettings, bco
    from twinlm.align.heldout import summary

    settings = BCOSettings(
        beta=args.beta, learning_rate=args.lr, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, max_length=args.max_length, max_prompt_length=args.max_length // 2,
        ref_model=args.ref_model, precompute_ref_log_probs=args.precompute_ref, lora=args.lora,
        udm_embedder=args.udm_embedder, prompt_sample_size=args.prompt_sample_size,
        min_density_ratio=args.min_density_ratio, max_density_ratio=args.max_density_ratio,
        router_aux_loss_coef=args.router_aux_loss_coef, seed=args.seed, save_steps=args.save_steps,
    )
    metrics = bco(args.model, args.data, args.out, settings, overwrite=args.overwrite, resume=args.resume,
                  eval_data=args.eval_data)
    held = f"; {summary(metrics['before'], metrics['after'])}" if args.eval_data else ""
    print(f"bco: train loss {metrics.get('train_loss', float('nan')):.4f}, delta {metrics['delta']:.4f}{held}; "
          f"model: {args.out}")
    return 0
