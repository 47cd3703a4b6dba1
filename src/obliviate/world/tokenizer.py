"""A CLIP-format BPE tokenizer trained on the world's caption words.

Why our own: the world needs no 49k-token vocabulary, and a small one keeps the text encoder tiny. The
format is CLIP's (byte-level base alphabet, ``</w>`` word ends, ``<|endoftext|>`` padding as in SD 1.x), so
every caption word is one token and any other word still tokenizes, into characters, as real CLIP does.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def train_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Greedy BPE over ``words`` until every word is a single token; returns (vocab, merges)."""
    base = list(bytes_to_unicode().values())
    vocab = base + [c + "</w>" for c in base]
    segments = {w: tuple(list(w[:-1]) + [w[-1] + "</w>"]) for w in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seg in segments.values():
            pairs.update(zip(seg, seg[1:], strict=False))
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, ties broken alphabetically
        merges.append(best)
        joined = best[0] + best[1]
        vocab.append(joined)
        for word, seg in segments.items():
            out, i = [], 0
            while i < len(seg):
                if i < len(seg) - 1 and (seg[i], seg[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segments[word] = tuple(out)
    vocab += [BOS, EOS]
    return {tok: i for i, tok in enumerate(dict.fromkeys(vocab))}, merges


def build_tokenizer(words: list[str], out_dir: Path, max_length: int) -> CLIPTokenizer:
    """Train the BPE, write ``vocab.json``/``merges.txt`` (readable by any transformers) and load it."""
    vocab, merges = train_bpe(words)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = CLIPTokenizer(vocab=str(out_dir / "vocab.json"), merges=str(out_dir / "merges.txt"),
                        model_max_length=max_length, pad_token=EOS)
    for w in words:
        if len(tok.tokenize(w)) != 1:
            raise RuntimeError(f"tokenizer did not learn {w!r} as one token")
    tok.save_pretrained(out_dir)
    return tok


def build_t5_tokenizer(words: list[str], max_length: int):
    """A T5-format tokenizer (sentencepiece unigram pieces, ``</s>`` appended, ``<pad>`` = 0) over the world's
    words, written to ``out_dir``: every caption word is one piece, and any other word still tokenizes, into
    single characters, as real T5 spells unknown words in pieces. Its vocabulary is not CLIP's, as SD3's and
    Flux's T5 is not; ``max_length`` is the sequence length the world's pipelines read. (In memory: a
    pipeline's ``save_pretrained`` writes it.)"""
    from transformers import T5TokenizerFast

    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    pieces = [(f"\u2581{w}", -1.0) for w in sorted(set(words))]  # "▁": sentencepiece's word start
    pieces += [("\u2581", -5.0)] + [(c, -10.0) for c in chars]
    tok = T5TokenizerFast(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces], extra_ids=0,
                          model_max_length=max_length)
    for w in words:
        if len(tok.tokenize(w)) != 1:
            raise RuntimeError(f"T5 tokenizer did not learn {w!r} as one piece")
    return tok
