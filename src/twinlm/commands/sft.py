"""`twinlm sft MODEL --data ROWS --out DIR`: supervised fine-tuning of a decoder on TRL."""

from __future__ import annotations

from twinlm.commands.common import add_align_args, run_alignment

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
DIR/checkpoints for --resume. The learning rate's default depends on the mode: full fine-tuning
or LoRA (see --lr)."""


def register(sub) -> None:
    from twinlm.align.settings import SFTSettings

    p = sub.add_parser("sft", help="supervised fine-tuning of a decoder (TRL)", description=HELP)
    add_align_args(p, SFTSettings, "fine-tuned model")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.align.sft import SFTSettings, sft

    metrics, held = run_alignment(args, SFTSettings, sft)
    print(f"sft: train loss {metrics.get('train_loss', float('nan')):.4f} ({metrics['data_format']} data){held}; "
          f"model: {args.out}")
    return 0
