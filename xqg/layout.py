"""The run-directory layout: every stage name, unit name, output folder, index, query set, run and report name.

Stages never type a path of another stage by hand; they ask here. Names that users choose (fused sets, indexes,
query sets, runs) pass through `check_name` before they become paths.
"""

from __future__ import annotations

import posixpath

from xqg.config import Config
from xqg.names import check_name, check_run_path
from xqg.rundir import parse_shard, shard_name

__all__ = ["check_name", "check_run_path"]  # re-exported: stages ask layout for every path

# Stage names as the run directory spells them (markers/<stage>/, rejects/<stage>/, _locks/<stage>.json); which
# stages there are, and in what order they run, is the stage registry's (xqg.stages).
INGEST, TRAIN_QG, GENERATE, TRAIN_DR, ENCODE, TUNE, FUSE, INDEX, SEARCH, EVALUATE = (
    "ingest", "train_qg", "generate", "train_dr", "encode", "tune", "fuse", "index", "search", "evaluate",
)
TUNED = "tuned"  # the suffix of a fused set made with the fusion that the tune stage chose
PART = "part-00000.parquet"

# encode targets; each is also the first folder of its units under embeddings/
PASSAGES, GENERATED, QUERIES = "passages", "generated", "queries"
BASELINE = "baseline"


# ---- settings ----------------------------------------------------------------------------------------------
# A named bi-encoder setting (config.settings, e.g. zero-shot) suffixes every name the bi-encoder side owns: its
# model (models/dr-<s>), embeddings (passages-<s>/, generated[-kK]-<s>/, queries-<s>/), fused set, indexes, runs
# and report. The main setting (None) keeps the plain names.
def setting_suffix(setting: str | None) -> str:
    """'' for the main setting, '-<name>' for a named one."""
    return "" if setting is None else f"-{check_name('setting', setting)}"


def dr_name(setting: str | None = None) -> str:
    """models/<dr_name>: 'dr', or 'dr-<setting>'."""
    return f"dr{setting_suffix(setting)}"


def training_unit(kind: str, name: str) -> str:
    """A training's marker ('model' or 'data'); a setting's bi-encoder ('dr-<s>') gets 'model-<s>', 'data-<s>'."""
    _, _, setting = name.partition("-")
    return f"{kind}-{setting}" if setting else kind


# ---- ingest ------------------------------------------------------------------------------------------------
def corpus_unit(shard: int) -> str:
    """shard=NNNNN: an ingest unit and its corpus folder's name."""
    return shard_name(shard)


def corpus_dir(shard: int) -> str:
    """corpus/shard=NNNNN."""
    return posixpath.join("corpus", shard_name(shard))


def query_set_unit(name: str) -> str:
    """queries=<set>: the ingest unit of a query set."""
    return f"queries={check_name('query set', name)}"


def query_set_dir(name: str) -> str:
    """queries/<set>."""
    return posixpath.join("queries", check_name("query set", name))


# ---- generate ----------------------------------------------------------------------------------------------
def generated_unit(lang: str, shard: int) -> str:
    """lang=xx/shard=NNNNN: a generate unit (its marker, rejects and output folder name)."""
    return f"lang={lang}/{shard_name(shard)}"


def generated_dir(lang: str, shard: int) -> str:
    """generated/lang=xx/shard=NNNNN."""
    return posixpath.join("generated", generated_unit(lang, shard))


def parse_lang_shard(unit: str) -> tuple[str, int] | None:
    """'lang=ar/shard=00002' -> ('ar', 2); None for other names."""
    parts = unit.split("/")
    if len(parts) != 2 or not parts[0].startswith("lang=") or not parts[1].startswith("shard="):
        return None
    return parts[0][len("lang="):], parse_shard(parts[1])


# ---- encode ------------------------------------------------------------------------------------------------
def generated_variant(num_queries: int | None, setting: str | None = None) -> str:
    """Folder of the generated-query sums: 'generated' (all queries) or 'generated-k{k}' (first k of each list),
    '-<setting>' appended for a named setting."""
    base = GENERATED if num_queries is None else f"{GENERATED}-k{num_queries}"
    return base + setting_suffix(setting)


def passages_target(setting: str | None = None) -> str:
    """First folder of the passage embeddings: 'passages' or 'passages-<setting>'."""
    return PASSAGES + setting_suffix(setting)


def queries_target(setting: str | None = None) -> str:
    """First folder of the query-set embeddings: 'queries' or 'queries-<setting>'."""
    return QUERIES + setting_suffix(setting)


def passages_unit(shard: int, setting: str | None = None) -> str:
    """passages[-<setting>]/shard=NNNNN."""
    return posixpath.join(passages_target(setting), shard_name(shard))


def generated_sum_unit(variant: str, lang: str, shard: int) -> str:
    """generated[-kK]/lang=xx/shard=NNNNN."""
    return posixpath.join(variant, generated_unit(lang, shard))


def queries_unit(name: str, setting: str | None = None) -> str:
    """queries[-<setting>]/<set>."""
    return posixpath.join(queries_target(setting), check_name("query set", name))


def embeddings_dir(unit: str) -> str:
    """Folder (relative to the run) that holds an encode unit's embeddings."""
    return posixpath.join("embeddings", unit)


def parse_generated_sum_unit(unit: str) -> tuple[str, str, int] | None:
    """'generated-k3/lang=ar/shard=00002' -> ('generated-k3', 'ar', 2); None for other units."""
    head, _, rest = unit.partition("/")
    parsed = parse_lang_shard(rest)
    if not head.startswith(GENERATED) or parsed is None:
        return None
    return head, parsed[0], parsed[1]


# ---- fuse, index -------------------------------------------------------------------------------------------
def fused_set(config: Config) -> str:
    """The configured fused set's name (checked with the config: a plain name, never 'baseline'), '-<setting>'
    appended for a named setting."""
    return config.fuse.name + setting_suffix(config.setting)


def baseline_index(config: Config) -> str:
    """The baseline index of the config's setting: 'baseline' or 'baseline-<setting>'."""
    return BASELINE + setting_suffix(config.setting)


def is_baseline(name: str) -> bool:
    """Whether an index name is a baseline (passage embeddings alone) of some setting."""
    return name in (BASELINE, PASSAGES) or name.startswith(f"{BASELINE}-")


def tune_unit(config: Config) -> str:
    """The tune stage's unit of a setting: named after the paper's fused set it tunes ('xqg', 'xqg-zero_shot')."""
    return fused_set(config)


def tune_file(config: Config) -> str:
    """tune/<fused set>.json: the tune stage's choice and its held-out scores."""
    return posixpath.join("tune", f"{tune_unit(config)}.json")


def tuned_set(config: Config) -> str:
    """The fused set made with the tuned fusion: '<fuse name>-tuned', '-<setting>' appended for a named setting."""
    return f"{config.fuse.name}-{TUNED}{setting_suffix(config.setting)}"


def baseline_setting(name: str) -> str | None:
    """The setting a baseline index belongs to: 'baseline-zero_shot' -> 'zero_shot', 'baseline' -> None."""
    return name[len(BASELINE) + 1:] if name.startswith(f"{BASELINE}-") else None


def fused_unit(name: str, shard: int) -> str:
    """<set>/shard=NNNNN."""
    return posixpath.join(check_name("fused set", name), shard_name(shard))


def fused_dir(unit: str) -> str:
    """fused/<set>/shard=NNNNN."""
    return posixpath.join("fused", unit)


def index_name(name: str) -> str:
    """'passages' and 'baseline' name the baseline index; any other name is a fused set's."""
    return BASELINE if name in (BASELINE, PASSAGES) else check_name("index", name)


def index_dir(name: str) -> str:
    """index/<name>."""
    return posixpath.join("index", index_name(name))


def index_unit(name: str, shard: int) -> str:
    """<index>/shard=NNNNN: one FAISS shard of an index."""
    return posixpath.join(index_name(name), shard_name(shard))


def index_names(config: Config) -> list[str]:
    """The baseline (passage embeddings alone), the +xQG (fused, paper) and, when tuning is configured, the +xQG
    tuned index of the config's setting, compared by evaluate."""
    tuned = [tuned_set(config)] if config.tune.query_set is not None else []
    return [baseline_index(config), fused_set(config), *tuned]


# ---- search, evaluate --------------------------------------------------------------------------------------
def default_query_set(config: Config, encoded: list[str] | None = None) -> str:
    """The query set runs are plainly named for: the first configured set, else search.query_set, else the only
    encoded one."""
    if config.queries:
        return config.queries[0].name
    if config.search.query_set:
        return check_name("search.query_set", config.search.query_set)
    if encoded is not None and len(encoded) == 1:
        return encoded[0]
    raise ValueError(
        f"which query set? none is configured and {len(encoded or [])} are encoded ({encoded or []}): "
        "add one under `queries:` or pass --queries"
    )


def query_set_name(config: Config, encoded: list[str] | None = None) -> str:
    """The query set searched and scored: search.query_set, else the default set."""
    if config.search.query_set:
        return check_name("search.query_set", config.search.query_set)
    return default_query_set(config, encoded)


def run_name(index: str, query_set: str, default_set: str) -> str:
    """A run file's name: the index name for the default query set, '<index>.<set>' for another."""
    index = index_name(index)
    return index if query_set == default_set else f"{index}.{check_name('query set', query_set)}"


def run_file(name: str, ext: str = "tsv") -> str:
    """runs/<name>.<ext>."""
    return posixpath.join("runs", f"{check_name('run', name)}.{ext}")


def report_name(config: Config) -> str:
    """reports/<name>.*: named after the +xQG run it compares with the baseline."""
    return run_name(fused_set(config), query_set_name(config), default_query_set(config))
