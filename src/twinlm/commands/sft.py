"""`twinlm sft MODEL --data ROWS --out DIR`: supervised fine-tuning of a decoder on TRL."""

from __future__ import annotations

from twinlm.commands.common import add_output_args, add_schedule_args

HELP = """Fine-tune a decoder (e.g. <run>/decoder) on TRL's SFTTrainer. ROWS is a jsonl/json/csv/parquet
file, a datasets save_to_disk folder or a hub id, in one of TRL's formats: 'text'; 'prompt' +
'completion'; or conversational ('messages' lists of {role, content}). A tokenizer without a chat
template gets twinlm's (role headers <user>/<assistant>, eos ends a turn), and says so.
--assistant-only-loss works with any chat template that renders conversations consistently: TRL's
{% generation %} markers where the template has them, else a mask derived from renders of each
conversation prefix (the line "assistant mask: ..." says which). --eval-data (same formats, or
preference rows prompt/chosen/rejected, or labelled rows prompt/completion/label) gives the held-out
loss, and for preference or labelled rows the preference accuracy (preferred completion more
likely), before and after training. Writes a plain Hugging Face folder to DIR (LoRA merged; the
adapter in DIR/adapter), DIR/sft.json with the settings, metrics and held-out scores, and
DIR/checkpoints for --resume."""


def register(sub) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning of a decoder (TRL)", description=HELP)
    p.add_argument("model", help="decoder folder or hub id")
    p.add_argument("--data", required=True, help="training rows (file, save_to_disk folder or hub id)")
    p.add_argument("--eval-data", default=None,
                   help="held-out rows: loss (and preference accuracy for chosen/rejected or labelled rows) "
                        "before and after training")
    add_output_args(p, "fine-tuned model")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from DIR/checkpoints")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all weights")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--target-modules", default=None,
                   help="comma-separated LoRA targets (default: the family's attention and MLP projections)")
    p.add_argument("--assistant-only-loss", action="store_true", help="conversational data: loss on assistant turns only (any consistent chat template)")
    p.add_argument("--full-sequence-loss", action="store_true", help="loss on every token (prompt-completion data: the prompt too; conversational: every turn)")
    p.add_argument("--packing", action="store_true", help="pack rows into --max-length blocks")
    p.add_argument("--max-length", type=int, default=1024, help="max tokens per row or packed block (default 1024)")
    add_schedule_args(p, lr=2e-5)
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.align.heldout import summary
    from twinlm.align.sft import SFTSettings, sft

    settings = SFTSettings(
        lora=args.lora, lora_r=args.lora_r,
        target_modules=args.target_modules.split(",") if args.target_modules else None,
        assistant_only_loss=args.assistant_only_loss, completion_only_loss=False if args.full_sequence_loss else None,
        packing=args.packing, max_length=args.max_length, learning_rate=args.lr, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, seed=args.seed,
    )
    metrics = sft(args.model, args.data, args.out, settings, overwrite=args.overwrite, resume=args.resume,
                  eval_data=args.eval_data)
    held = f"; {summary(metrics['before'], metrics['after'])}" if args.eval_data else ""
    print(f"sft: train loss {metrics.get('train_loss', float('nan')):.4f} ({metrics['data_format']} data){held}; "
          f"model: {args.out}")
    return 0
