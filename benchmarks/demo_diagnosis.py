"""Why +xQG does not help in the offline demo: retrieval and geometry measured on a finished demo run.

``python benchmarks/demo_diagnosis.py --run runs/demo [--out diagnosis.json]`` reads a complete demo run (the
trained bi-encoders, passage / generated-query / dev-query embeddings) and the bundled demo data, and for each
bi-encoder setting (supervised ``dr``, zero-shot ``dr-zero_shot``) scores on dev, with xqg's own fusion
(``xqg.fuse``), FAISS index (``xqg.index.build``) and metrics (``xqg.evaluate``):

- ``baseline``: the passage embeddings e(p) (what the pipeline's baseline index holds);
- ``generated sum``: the generated queries alone, S(p) = sum of e(q) over the 21 queries (alpha = 1);
- ``generated normalized``: S(p) / |S(p)|;
- ``+xQG a=0.01``: (1 - a) e(p) + a S(p), the pipeline's fused set;
- ``+xQG a=0.01, S at mean norm``: the same with every S(p) rescaled to the mean |S| (isolates the sums' lengths);
- ``oracle dev alone`` / ``oracle dev a=0.01``: each dev passage's own dev question as its only "generated" query
  (the upper bound of the test in tests/fuse/test_oracle_queries.py; every other passage keeps e(p));
- ``perfect generator alone`` / ``... normalized`` / ``... a=0.01``: every passage gets 3 questions per language
  written with the demo data's own question templates and its true facts (a generator that always names the
  entity and asks a real question), encoded with the setting's query encoder; the dev question's own (template,
  language) is left out of its passage's set, so no passage holds its dev question verbatim.

Diagnostics of the hypothesis "near-duplicate passages' generated queries share their template and the tiny
bi-encoder weighs the template over the name" (families: a passage and its up to 3 near-duplicates, rebuilt from
xqg.demo.data with the data's seed and checked against passages.jsonl):

- mean cosine of S(p) with S of its family members, with S of same-type passages of other families, and with
  random passages; the same for e(p) (for comparison);
- for each dev question, whose S (normalized) is nearest: the gold passage, a family member of it, a same-type
  passage of another family, or another passage; likewise with e(p);
- the spread of |S(p)| and how much of q.S(p) it explains (correlation over passages, distinct rank-1 passages);
- |a S(p)| / |(1 - a) e(p)| at a = 0.01, and the score each part gives: q.(1-a)e(p) vs q.aS(p) on the gold passage
  and on the best-scoring family member.

Nothing is tuned: alpha is the paper's 0.01 (and 1 for the "alone" rows); no seed is chosen.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xqg.demo import data as demo_data  # noqa: E402
from xqg.encode.vectors import vector_matrix  # noqa: E402
from xqg.evaluate.metrics import ir_metrics  # noqa: E402
from xqg.evaluate.xor import TokenCache, recall_at_kt  # noqa: E402
from xqg.fuse import fuse_vectors, gather_generated  # noqa: E402
from xqg.index.build import fill_index  # noqa: E402
from xqg.rundir import RunDir  # noqa: E402

SETTINGS = {"supervised": "", "zero_shot": "-zero_shot"}
ALPHA = 0.01
PER_LANG = 3
DEPTH = 100


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def families(passages: list[dict], seed: int) -> tuple[dict[str, int], dict]:
    """docid -> family number, from the demo data generator (a family: one passage + its near-duplicates)."""
    made = demo_data.make_passages(len(passages), random.Random(seed))
    if [(p.docid, p.title) for p in made] != [(p["docid"], p["title"]) for p in passages]:
        raise SystemExit("passages.jsonl is not the data generator's output for this seed: families unknown")
    fam, out, prev = -1, {}, None
    for p in made:
        # families cycle through the entity types, and a near-duplicate keeps its first passage's sentence choices
        if (p.etype.name, p.choices) != prev:
            fam += 1
            prev = (p.etype.name, p.choices)
        out[p.docid] = fam
    return out, {p.docid: p for p in made}


def perfect_queries(made: dict, dev: list[dict], languages: list[str], seed: int) -> dict[str, list[str]]:
    """docid -> the data's own questions (3 per language, the dev question's template and language left out)."""
    skip = set()
    for q in dev:
        p = made[q["docid"]]
        for key in p.etype.answers:
            if demo_data._question(p, key, q["lang"]) == q["question"]:
                skip.add((p.docid, key, q["lang"]))
    out = {}
    for docid, p in made.items():
        rows = []
        for lang in languages:
            keys = [k for k in sorted(p.etype.answers) if (docid, k, lang) not in skip]
            picked = random.Random(f"{seed}-{docid}-{lang}").sample(keys, PER_LANG)
            rows += [demo_data._question(p, k, lang) for k in picked]
        out[docid] = rows
    return out


def encode_queries(model_dir: str, texts: list[str]) -> np.ndarray:
    from xqg.models.encoder import Encoder, tokenize_queries

    meta = json.loads((Path(model_dir) / "xqg_dr.json").read_text())
    enc = Encoder(model_dir, meta.get("pooling", "cls"))
    return enc.encode(tokenize_queries(enc.tokenizer, texts, int(meta.get("q_max_len", 32)), padded=False), 256)


def score(vectors: np.ndarray, queries: np.ndarray, qids: list[str], docids: list[str], dev: list[dict],
          texts: dict[str, str], cache: TokenCache) -> dict[str, float]:
    """R@2kt / R@5kt (macro over languages, as the report) and MRR@10 of a flat inner-product index."""
    index = fill_index({"type": "flat"}, vectors)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), DEPTH)
    ranked = {q: [docids[i] for i in row if i >= 0] for q, row in zip(qids, ids)}
    questions = [{"id": q["id"], "lang": q["lang"], "answers": q["answers"]} for q in dev]
    res = recall_at_kt(questions, {q: [texts[d] for d in ds] for q, ds in ranked.items()}, ks=(2, 5), cache=cache)
    run = {q: {docids[i]: float(s) for i, s in zip(row, srow) if i >= 0} for q, row, srow in zip(qids, ids, scores)}
    mrr = ir_metrics({q["id"]: {q["docid"]: 1} for q in dev}, run, ks=(10,))["mrr@10"]
    return {"R@2kt": round(res.scores(2)["avg"], 1), "R@5kt": round(res.scores(5)["avg"], 1), "MRR@10": round(mrr, 4)}


def spread(q: np.ndarray, x: np.ndarray) -> float:
    """Median over questions of the standard deviation of their scores over all rows of x."""
    return round(float(np.median((q @ x.T).std(axis=1))), 3)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_cosines(x: np.ndarray, fam: np.ndarray, etype: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Mean cosine of each row with its family members, with same-type rows of other families, with random rows."""
    u = unit(x)
    sims = u @ u.T
    n = len(x)
    eye = np.eye(n, dtype=bool)
    same_fam = (fam[:, None] == fam[None, :]) & ~eye
    same_type = (etype[:, None] == etype[None, :]) & ~(fam[:, None] == fam[None, :])
    rand = rng.integers(0, n, size=(n, 20))
    rand_sims = np.take_along_axis(sims, rand, axis=1)[rand != np.arange(n)[:, None]]
    return {"family": round(float(sims[same_fam].mean()), 4),
            "same type, other family": round(float(sims[same_type].mean()), 4),
            "random": round(float(rand_sims.mean()), 4)}


def nearest_kind(
    x: np.ndarray, q: np.ndarray, gold: np.ndarray, fam: np.ndarray, etype: np.ndarray
) -> dict[str, float]:
    """Share (%) of dev questions whose nearest row (inner product) is the gold, its family, same type, other."""
    top = np.argmax(q @ x.T, axis=1)
    kinds = np.where(top == gold, "gold", np.where(fam[top] == fam[gold], "family member",
                     np.where(etype[top] == etype[gold], "same type, other family", "other")))
    names = ("gold", "family member", "same type, other family", "other")
    return {k: round(100 * float(np.mean(kinds == k)), 1) for k in names}


def diagnose(run_dir: str, data_dir: Path, seed: int, perfect: bool) -> dict:
    run = RunDir(run_dir)
    passages = read_jsonl(data_dir / "passages.jsonl")
    dev = read_jsonl(data_dir / "dev.jsonl")
    docids = [p["docid"] for p in passages]
    pos = {d: i for i, d in enumerate(docids)}
    texts = {p["docid"]: p["text"] for p in passages}  # evaluate.include_title is false in the demo
    fam_of, made = families(passages, seed)
    fam = np.array([fam_of[d] for d in docids])
    etype = np.array([made[d].etype.name for d in docids])
    gold = np.array([pos[q["docid"]] for q in dev])
    languages = sorted({q["lang"] for q in dev})
    sizes = np.bincount(fam)
    out: dict = {"passages": len(docids), "families": int(fam.max() + 1),
                 "family sizes": {int(k): int((sizes == k).sum()) for k in np.unique(sizes)},
                 "dev questions": len(dev), "alpha": ALPHA, "settings": {}}
    cache = TokenCache()
    perfect_texts = perfect_queries(made, dev, languages, seed) if perfect else None
    import pyarrow as pa

    for setting, sfx in SETTINGS.items():
        rng = np.random.default_rng(seed)
        ptab = run.read_dir(f"embeddings/passages{sfx}")
        p_ids = ptab["docid"].to_pylist()
        P = vector_matrix(ptab["embedding"])[np.argsort([pos[d] for d in p_ids])]
        dim = P.shape[1]
        gen_root = Path(run.path(f"embeddings/generated{sfx}"))
        tables = [run.read_dir(f"embeddings/generated{sfx}/{lang.name}") for lang in sorted(gen_root.glob("lang=*"))]
        S, counts, unmatched = gather_generated(pa.array(docids), tables, dim)
        qtab = run.read_dir(f"embeddings/queries{sfx}/dev")
        q_pos = {q: i for i, q in enumerate(qtab["qid"].to_pylist())}
        Q = vector_matrix(qtab["embedding"])[[q_pos[q["id"]] for q in dev]]
        qids = [q["id"] for q in dev]

        # the oracle: each dev passage's own question as its one generated query
        O, ocounts = np.zeros_like(P), np.zeros(len(P), dtype=np.int64)
        np.add.at(O, gold, Q)
        np.add.at(ocounts, gold, 1)

        rows = {
            "baseline": P,
            "generated sum (alpha 1)": S,
            "generated normalized": unit(S),
            f"+xQG a={ALPHA}": fuse_vectors(P, S, counts, ALPHA, "sum"),
            # the same fusion with every S(p) rescaled to the mean norm: what the sums' differing lengths do
            f"+xQG a={ALPHA}, S at mean norm": fuse_vectors(P, unit(S) * float(np.linalg.norm(S, axis=1).mean()),
                                                         counts, ALPHA, "sum"),
            "oracle dev alone": np.where(ocounts[:, None] > 0, O, 0.0),
            f"oracle dev a={ALPHA}": fuse_vectors(P, O, ocounts, ALPHA, "sum"),
        }
        res: dict = {"queries per passage": {"min": int(counts.min()), "max": int(counts.max())},
                     "unmatched generated rows": unmatched}
        if perfect_texts is not None:
            model_dir = run.path(f"models/dr{sfx}")
            flat = [t for d in docids for t in perfect_texts[d]]
            owner = np.repeat(np.arange(len(docids)), [len(perfect_texts[d]) for d in docids])
            E = encode_queries(model_dir, flat)
            G = np.zeros_like(P)
            np.add.at(G, owner, E)
            gcounts = np.bincount(owner, minlength=len(docids))
            rows["perfect generator alone"] = G
            rows["perfect generator normalized"] = unit(G)
            rows[f"perfect generator a={ALPHA}"] = fuse_vectors(P, G, gcounts, ALPHA, "sum")
        res["retrieval"] = {name: score(v, Q, qids, docids, dev, texts, cache) for name, v in rows.items()}

        geo: dict = {
            "cosine e(p)": pair_cosines(P, fam, etype, rng),
            "cosine S(p), generated": pair_cosines(S, fam, etype, rng),
            "nearest to the dev question, e(p)": nearest_kind(P, Q, gold, fam, etype),
            "nearest to the dev question, S(p) normalized": nearest_kind(unit(S), Q, gold, fam, etype),
        }
        if perfect_texts is not None:
            geo["cosine S(p), perfect generator"] = pair_cosines(G, fam, etype, rng)
            geo["nearest to the dev question, perfect S(p) normalized"] = nearest_kind(unit(G), Q, gold, fam, etype)
        norms = np.linalg.norm(S, axis=1)
        qs = Q @ S.T
        p_norms = np.linalg.norm(P, axis=1)
        geo["|S(p)|"] = {"mean": round(float(norms.mean()), 2),
                         "coefficient of variation": round(float(norms.std() / norms.mean()), 3)}
        geo["|e(p)| coefficient of variation"] = round(float(p_norms.std() / p_norms.mean()), 3)
        # How much of q.S(p) is |S(p)|: per question, the correlation over passages; and how many passages ever
        # come first (a long S wins for every question: few distinct winners).
        corr = [np.corrcoef(r, norms)[0, 1] for r in qs]
        geo["mean corr over passages of q.S(p) with |S(p)|"] = round(float(np.mean(corr)), 3)
        geo["distinct top-1 passages over the dev questions"] = {
            name: int(len(np.unique(np.argmax(Q @ v.T, axis=1))))
            for name, v in (("e(p)", P), ("S(p)", S), ("S(p) normalized", unit(S)),
                            (f"+xQG a={ALPHA}", rows[f"+xQG a={ALPHA}"]))}
        ratio = np.linalg.norm(ALPHA * S, axis=1) / np.linalg.norm((1 - ALPHA) * P, axis=1)
        geo["|a S| / |(1-a) e(p)|"] = {"median": round(float(np.median(ratio)), 3), "min": round(float(ratio.min()), 3),
                                       "max": round(float(ratio.max()), 3)}
        # What the fusion adds to a dev question's score on its gold passage vs on the gold's best family member
        # (by baseline score): the baseline margin gold - member against the added margin.
        fam_members = [np.flatnonzero((fam == fam[g]) & (np.arange(len(fam)) != g)) for g in gold]
        base_gold = np.einsum("ij,ij->i", Q, (1 - ALPHA) * P[gold])
        add_gold = np.einsum("ij,ij->i", Q, ALPHA * S[gold])
        margins_base, margins_add = [], []
        for i, members in enumerate(fam_members):
            if len(members) == 0:
                continue
            s_base = Q[i] @ ((1 - ALPHA) * P[members]).T
            j = members[int(np.argmax(s_base))]
            margins_base.append(base_gold[i] - float(Q[i] @ ((1 - ALPHA) * P[j])))
            margins_add.append(add_gold[i] - float(Q[i] @ (ALPHA * S[j])))
        mb, ma = np.array(margins_base), np.array(margins_add)
        geo["score parts"] = {
            "median q.(1-a)e(gold)": round(float(np.median(base_gold)), 3),
            "median q.aS(gold)": round(float(np.median(add_gold)), 3),
            "dev questions with a family": int(len(mb)),
            "gold ahead of its best family member, baseline (%)": round(100 * float(np.mean(mb > 0)), 1),
            "gold ahead of that member in q.aS (%)": round(100 * float(np.mean(ma > 0)), 1),
            "median baseline margin gold - member": round(float(np.median(mb)), 3),
            "median added margin gold - member": round(float(np.median(ma)), 3),
            "median spread of q.aS over all passages (std)": spread(Q, ALPHA * S),
            "median spread of q.(1-a)e(p) over all passages (std)": spread(Q, (1 - ALPHA) * P),
        }
        res["geometry"] = geo
        out["settings"][setting] = res
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a complete demo run directory (read only)")
    parser.add_argument("--data", default=str(REPO / "data" / "demo"))
    parser.add_argument("--seed", type=int, default=0, help="the demo data's seed (data/demo/README.md)")
    parser.add_argument("--no-perfect", action="store_true", help="skip the perfect-generator rows (no encoding)")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    result = diagnose(args.run, Path(args.data), args.seed, not args.no_perfect)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
