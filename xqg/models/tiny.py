"""Tiny real models built from scratch offline: a SentencePiece mT5, a WordPiece BERT, a Llama decoder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xqg.config import ScratchModel

# Decoder-only (causal LM) architectures a scratch spec may name: the vLLM route's generators. (Not qwen2: transformers
# would load its tokenizer as Qwen2's byte-level BPE class, which mangles this SentencePiece vocabulary.)
DECODERS = ("llama",)


def _write_lines(texts: Iterable[str], path: Path) -> tuple[int, int]:
    """Write one normalised text per line; return (lines, distinct characters)."""
    n, chars = 0, set()
    with path.open("w", encoding="utf-8") as f:
        for t in texts:
            t = " ".join(str(t).split())
            if t:
                f.write(t + "\n")
                chars.update(t)
                n += 1
    return n, len(chars)


def train_sentencepiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int) -> Path:
    """Train a unigram SentencePiece model (T5 id layout: pad 0, eos 1, unk 2); return its .model path."""
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "text.txt"
        lines, n_chars = _write_lines(texts, corpus)
        if lines == 0:
            raise ValueError("cannot train a tokenizer on no text")
        # Every character needs an id of its own, whatever size was asked for.
        vocab_size = max(vocab_size, n_chars + 3 + 32)
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(out / "spiece"),
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # small samples cannot fill a large vocabulary
            character_coverage=1.0,  # every character of the sample gets a piece (ja, ko, te ...); like mT5, no byte fallback
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            num_threads=1,
            minloglevel=2,
        )
    # The model records the paths it was trained from (a fresh temporary folder each time): keep them out, so that
    # the same text makes the same bytes in every process.
    from sentencepiece import sentencepiece_model_pb2

    model = out / "spiece.model"
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    proto.trainer_spec.input[:] = [corpus.name]
    proto.trainer_spec.model_prefix = "spiece"
    model.write_bytes(proto.SerializeToString())
    return model


def sentencepiece_tokenizer(spec: ScratchModel, texts: Iterable[str], out: Path) -> Any:
    """A T5Tokenizer over a unigram SentencePiece model trained on texts (its files kept in out/_spm)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from transformers import T5Tokenizer

    model_file = train_sentencepiece(texts, out / "_spm", spec.vocab_size)
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    # The NFKC rules SentencePiece trained with must also run in the fast tokenizer (e.g. full-width ？ -> ?).
    return T5Tokenizer(
        vocab=vocab,
        extra_ids=0,
        model_max_length=spec.max_length,
        _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap,
    )


def build_mt5(spec: ScratchModel, texts: Iterable[str], out_dir: str | Path) -> Path:
    """Build a tiny randomly initialised MT5ForConditionalGeneration + tokenizer, saved with save_pretrained."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    out = Path(out_dir)
    tokenizer = sentencepiece_tokenizer(spec, texts, out)
    torch.manual_seed(spec.seed)
    config = MT5Config(
        vocab_size=len(tokenizer),
        d_model=spec.d_model,
        d_kv=max(spec.d_model // spec.num_heads, 4),
        d_ff=spec.d_ff,
        num_layers=spec.num_layers,
        num_decoder_layers=spec.num_layers,
        num_heads=spec.num_heads,
        dropout_rate=spec.dropout,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = MT5ForConditionalGeneration(config)
    # transformers 5 ties mT5's lm_head to the shared embedding (whatever the config says), drawn from N(0, 1) and
    # applied to the decoder output unscaled (harmless for pre-trained checkpoints, which overwrite it): from
    # scratch that makes logits of std ~sqrt(d_model), a first loss of ~64 nats, and the demo's generator spent its
    # training undoing it (loss 3.6 after 384 steps of 32 demo pairs; 0.09 after 400 with this init, which the
    # shared input embedding gets too when tied).
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, spec.d_model ** -0.5)
    model.generation_config.decoder_start_token_id = tokenizer.pad_token_id
    _save(model, tokenizer, out)
    return out


BOS = "<s>"


def decoder_tokenizer(spec: ScratchModel, texts: Iterable[str], out: Path) -> Any:
    """The demo SentencePiece vocabulary as a decoder-only tokenizer: "<s>" prepended, no EOS appended (as Llama's).

    Generation continues the prompt, so the prompt must not end with EOS; training appends EOS to the target.
    """
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    t5 = sentencepiece_tokenizer(spec, texts, out)
    backend = t5.backend_tokenizer
    backend.add_special_tokens([BOS])
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=t5.eos_token, unk_token=t5.unk_token,
        pad_token=t5.pad_token, model_max_length=spec.max_length,
    )


def build_decoder(spec: ScratchModel, texts: Iterable[str], out_dir: str | Path) -> Path:
    """Build a tiny randomly initialised Llama causal LM (the real architecture) + the demo tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = decoder_tokenizer(spec, texts, out)
    torch.manual_seed(spec.seed)
    head_dim = max(spec.d_model // spec.num_heads, 4)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=head_dim * spec.num_heads,
        intermediate_size=spec.d_ff,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        head_dim=head_dim,
        max_position_embeddings=spec.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    _save(model, tokenizer, out)
    return out


BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUE = "##"


def wordpiece_vocab(texts: Iterable[str], vocab_size: int, min_frequency: int = 1) -> list[str]:
    """A WordPiece vocabulary learned as HF `tokenizers`' WordPieceTrainer learns it, but the same in every process.

    The same algorithm (BERT normalisation and pre-tokenisation, cased, accents kept, CJK ideographs split; words
    as characters, every non-initial one "##"-prefixed; repeatedly merge the most frequent adjacent pair, at equal
    count the pair of older pieces, until vocab_size pieces) and the same layout (special tokens, characters,
    their "##" forms, merges in order). What HF leaves to Rust hash maps, randomly seeded in every process, is
    fixed here: the characters are ordered by falling count, then by their text; the "##" forms likewise. HF's
    order of those decided the ids and so every equal-count merge: two builds from the same text gave different
    vocabularies (282 of the demo's 4,000 lines moved, up to 2 pieces differed) and different demo numbers.
    """
    import heapq
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    norm = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    pre = BertPreTokenizer()
    counts: Counter[str] = Counter()
    for t in texts:
        if t and str(t).strip():
            counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(str(t))))
    words = sorted(counts.items())  # a fixed order: the merge loop below depends on nothing else
    symbols = [[w[0]] + [CONTINUE + c for c in w[1:]] for w, _ in words]
    freq = [n for _, n in words]

    def by_count(counter: Counter[str]) -> list[str]:
        return [s for s, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))]

    initial, inner = Counter(), Counter()
    for syms, n in zip(symbols, freq):
        initial[syms[0]] += n
        for s in syms[1:]:
            inner[s] += n
    # Every character of the text is a piece of its own (HF: no alphabet limit), then its "##" forms.
    vocab = list(BERT_SPECIALS)
    vocab += [c for c in by_count(initial + Counter({s[len(CONTINUE):]: n for s, n in inner.items()}))
              if c not in BERT_SPECIALS]
    vocab += by_count(inner)
    ids = {t: i for i, t in enumerate(vocab)}

    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, (syms, n) in enumerate(zip(symbols, freq)):
        for p in zip(syms, syms[1:]):
            pairs[p] += n
            where.setdefault(p, set()).add(i)
    # A heap of (-count, ids of the pair): at equal count the pair of older pieces first (as HF's trainer).
    heap = [(-n, ids[a], ids[b]) for (a, b), n in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, ia, ib = heapq.heappop(heap)
        a, b = vocab[ia], vocab[ib]
        if pairs.get((a, b), 0) != -neg:
            continue  # a stale entry: the pair's count changed since it was pushed
        if -neg < min_frequency:
            break
        merged = a + (b[len(CONTINUE):] if b.startswith(CONTINUE) else b)
        if merged not in ids:  # two merges can make the same piece (a + ##bc, ab + ##c): one id
            ids[merged] = len(vocab)
            vocab.append(merged)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop((a, b), ())):
            syms, n = symbols[i], freq[i]
            for p in zip(syms, syms[1:]):
                pairs[p] -= n
                changed.add(p)
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            symbols[i] = out
            for p in zip(out, out[1:]):
                pairs[p] += n
                changed.add(p)
                where.setdefault(p, set()).add(i)
        for p in changed:
            if pairs[p] > 0:
                heapq.heappush(heap, (-pairs[p], ids[p[0]], ids[p[1]]))
            else:
                pairs.pop(p)
                where.pop(p, None)
    return vocab


def build_bert(spec: ScratchModel, texts: Iterable[str], out_dir: str | Path) -> Path:
    """Build a tiny randomly initialised BertModel + WordPiece tokenizer, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(out_dir)
    (out / "_wordpiece").mkdir(parents=True, exist_ok=True)
    vocab_file = out / "_wordpiece" / "vocab.txt"
    vocab_file.write_text("".join(t + "\n" for t in wordpiece_vocab(texts, spec.vocab_size)), encoding="utf-8")
    tokenizer = BertTokenizerFast(
        vocab_file=str(vocab_file),
        # transformers v5 builds the WordPiece model from `vocab` and ignores vocab_file (all tokens -> [UNK])
        vocab={t: i for i, t in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())},
        do_lower_case=False,
        strip_accents=False,
        tokenize_chinese_chars=True,
        model_max_length=spec.max_length,
    )
    torch.manual_seed(spec.seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.d_model,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.d_ff,
        max_position_embeddings=spec.max_length,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=spec.dropout,
    )
    model = BertModel(config, add_pooling_layer=False)
    _save(model, tokenizer, out)
    return out


def _save(model, tokenizer, out: Path) -> None:
    """Save model and tokenizer into out atomically enough: a folder appears only when complete."""
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for extra in ("_spm", "_wordpiece"):
        src = out / extra
        if src.exists():
            src.rename(tmp / extra)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)


def build_scratch(spec: ScratchModel, texts: Iterable[str], out_dir: str | Path) -> Path:
    """Build the from-scratch model a spec describes into out_dir."""
    if spec.scratch == "mt5":
        return build_mt5(spec, texts, out_dir)
    if spec.scratch in DECODERS:
        return build_decoder(spec, texts, out_dir)
    return build_bert(spec, texts, out_dir)
