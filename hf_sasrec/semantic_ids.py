"""Semantic ids: train an RQ-VAE ([`RQVAEModel`]) on an item embedding table and give every item a code per level,
plus a final de-duplication level so that no two items share a full code (as TIGER does).

    python -m hf_sasrec.semantic_ids --embeddings TABLE [TABLE ...] --output DIR [--data DATA_DIR]
                                     [--item-ids IDS [IDS ...]] [--normalize l2] [--num-levels 3] ...

A `TABLE` is one of:
- a `.npy` `[num_rows, dim]` whose rows follow an item-id list (`--item-ids`, one list per `.npy`, in order: a JSON
  list with `null` for a row of no item, a JSON object `{row: id}`, or a text file with one raw item id a line, as
  `data_preprocess`'s embedding tables take); the ids are mapped to token ids by the item tokenizer of `--data`.
  Ids the tokenizer does not know are dropped (counted in the log and the report);
- a `.npy` with one row per token id (as `python -m data_preprocess.text_embeddings` writes), when `--item-ids` is not
  given: special-token rows are ignored;
- a trained recommender's folder (`model.safetensors`): its output item embeddings, read without running its code.
Several tables are concatenated (each normalised first with `--normalize l2`); an item missing from any table gets no
code. The token ids are those of `--data`'s tokenizer, else of the tokenizer saved in a recommender folder, else the
rows of the tables themselves. A table with NaN or infinite values, a shape that is not `[rows, dim]`, a row count
that does not match its id list or the vocabulary, or a duplicate item id is refused with a message naming the file.

Training: the codebooks are initialised level by level by k-means over every item, then `transformers.Trainer` trains
the RQ-VAE (AdamW, linear decay) for `--epochs`; the defaults are TIGER's shape (3 levels of 256 codes, a 32-wide
latent, encoder 512-256-128, commitment weight 0.25). Codes are computed afterwards in eval mode over every item.

(This command lives in the model package, not in `data_preprocess`: the data step never imports model code, and
training the RQ-VAE needs it.)

The output folder (written as a whole: a failure leaves the previous one, and a folder this command did not write is
refused) holds:
- the RQ-VAE: `config.json` (with `auto_map`), `model.safetensors` and its code; `AutoModel.from_pretrained(DIR)`
  loads it (after `import hf_sasrec`, or with `trust_remote_code=True`);
- `codes.safetensors`: `codes`, int64 `[vocab_size, num_levels + 1]` in token-id order: the code of each level, then
  the de-duplication index (0 for the first item, in token-id order, i.e. the most popular, with a given code, 1 for
  the next, ...). Rows of special tokens and of items without an embedding hold -1 (missing);
- `codes.json`: the same codes as a list of rows, with what a reader needs to use them as categorical item features,
  one table per column: `vocab_size`, `num_special_tokens`, `num_levels`, `level_sizes` (the number of values of
  each column, the de-duplication level's being its largest index + 1), `missing_code` (-1), the
  `vocabulary_fingerprint` of the tokenizer (`null` when unknown) and the `embeddings` read;
- `report.json`: items coded and missing, the reconstruction error (mean squared error, and the fraction of the
  embeddings' variance it leaves unexplained), per level the codes used, the usage (used / `codebook_size`) and the
  perplexity (exp of the entropy of the code distribution), dead codes restarted during training, the collision
  rate before de-duplication (the fraction of items whose full code an earlier item already has:
  1 - distinct codes / items), the items sharing a code, and the largest de-duplication index.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerFast, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import TrainOutput
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME

from data_preprocess import embedding_tables
from data_preprocess.atomic_files import atomic_write_json
from data_preprocess.errors import PreprocessingError, cli_errors, require_file
from data_preprocess.item_tokenizer import NUM_SPECIAL_TOKENS, vocabulary_fingerprint
from data_preprocess.output import check_replaceable, replace_folder

from .checkpoint_loading import ITEM_VOCAB_FINGERPRINT, checkpoint_item_vectors
from .configuration_rqvae import RQVAEConfig
from .modeling_rqvae import RQVAEModel

PROG = "python -m hf_sasrec.semantic_ids"
CODES_FILE = "codes.safetensors"
CODES_JSON = "codes.json"
REPORT_FILE = "report.json"
MISSING_CODE = -1
ITEM2ID_FILE = "item2id.json"
LOGGED_STEPS = 20  # training-loss lines in the log

logger = logging.getLogger("hf_sasrec.semantic_ids")


@dataclass
class ItemVocabulary:
    """The token ids of the items: `item2id` (raw key -> token id) of a saved item tokenizer in `folder`."""

    folder: Path
    item2id: dict[str, int]
    size: int
    fingerprint: str


@dataclass
class EmbeddingTable:
    """An embedding table in token-id order: `vectors` `[vocab_size, dim]` float32, `present` `[vocab_size]` bool
    (the rows that hold an item's embedding), read from `source`."""

    source: str
    vectors: np.ndarray
    present: np.ndarray


def read_item_vocabulary(folder: str | Path) -> ItemVocabulary | None:
    """The item tokenizer saved in `folder` (a processed data folder's `tokenizer/`, or a training run folder), or
    `None` when it holds none."""
    for candidate in (Path(folder), Path(folder) / "tokenizer"):
        if (candidate / ITEM2ID_FILE).is_file():
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(candidate))
            item2id = json.loads((candidate / ITEM2ID_FILE).read_text(encoding="utf-8"))
            return ItemVocabulary(candidate, item2id, len(tokenizer), vocabulary_fingerprint(tokenizer))
    return None


def read_item_ids(path: str | Path) -> list[str | None]:
    """The raw item id of each row of a table (`None`: a row of no item), in the id-list formats of
    `data_preprocess`'s embedding tables (`data_preprocess.embedding_tables.read_item_ids`). An id on two rows is an
    error."""
    ids = embedding_tables.read_item_ids(path)
    first_row: dict[str, int] = {}
    for row, item in enumerate(ids):
        if item is not None and first_row.setdefault(item, row) != row:
            raise PreprocessingError(
                f"{path}: item id {item!r} on row {first_row[item] + 1} and again on row {row + 1}: a duplicate id"
            )
    return ids


def check_vectors(vectors: np.ndarray, source: str | Path) -> np.ndarray:
    """`vectors` as float32 `[rows, dim]`, or `PreprocessingError` naming `source` for another shape, a non-numeric
    type or a NaN or infinite value."""
    if vectors.ndim != 2 or 0 in vectors.shape:
        raise PreprocessingError(f"{source}: expected a 2-D table [num_items, dim], got shape {vectors.shape}")
    if not (np.issubdtype(vectors.dtype, np.integer) or np.issubdtype(vectors.dtype, np.floating)):
        raise PreprocessingError(f"{source}: expected numbers, got dtype {vectors.dtype}")
    vectors = vectors.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad_rows):
        raise PreprocessingError(
            f"{source}: {len(bad_rows)} rows hold NaN or infinite values (the first is row {bad_rows[0]})"
        )
    return vectors


def read_npy(path: str | Path) -> np.ndarray:
    """A numeric `.npy` table, checked by `check_vectors`."""
    path = require_file(path)
    try:
        vectors = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise PreprocessingError(f"{path}: not a numeric .npy table ({error})") from None
    return check_vectors(vectors, path)


def table_by_item_ids(
    path: str | Path, ids_path: str | Path, vocabulary: ItemVocabulary | None
) -> tuple[EmbeddingTable, int]:
    """A `.npy` whose rows follow the item-id list `ids_path`, placed in token-id order; and how many of its ids the
    vocabulary does not know (dropped)."""
    if vocabulary is None:
        raise PreprocessingError(
            f"{ids_path}: raw item ids need an item tokenizer to give their token ids: pass --data (the processed "
            "data folder)"
        )
    vectors, ids = read_npy(path), read_item_ids(ids_path)
    if len(ids) != len(vectors):
        raise PreprocessingError(f"{path} has {len(vectors)} rows, but {ids_path} lists {len(ids)} item ids")
    listed = np.array([item is not None for item in ids])
    token_ids = np.array([vocabulary.item2id.get(item, -1) if item is not None else -1 for item in ids])
    known = token_ids >= 0
    placed = np.zeros((vocabulary.size, vectors.shape[1]), dtype=np.float32)
    placed[token_ids[known]] = vectors[known]
    present = np.zeros(vocabulary.size, dtype=bool)
    present[token_ids[known]] = True
    unknown = int((listed & ~known).sum())
    if unknown:
        logger.info(
            "%s: %d of %d item ids are not in the vocabulary of %s: dropped",
            ids_path,
            unknown,
            int(listed.sum()),
            vocabulary.folder,
        )
    return EmbeddingTable(str(path), placed, present), unknown


def table_by_token_ids(
    path: str | Path, vectors: np.ndarray, num_special_tokens: int, vocabulary: ItemVocabulary | None
) -> EmbeddingTable:
    """A table with one row per token id; rows below `num_special_tokens` are not items."""
    if vocabulary is not None and len(vectors) != vocabulary.size:
        raise PreprocessingError(
            f"{path} has {len(vectors)} rows, but the vocabulary of {vocabulary.folder} has {vocabulary.size} token "
            "ids: give the table's item ids with --item-ids, or the data folder it was computed for with --data"
        )
    present = np.arange(len(vectors)) >= num_special_tokens
    return EmbeddingTable(str(path), vectors, present)


def read_model_table(folder: Path, vocabulary: ItemVocabulary | None) -> EmbeddingTable:
    """The output item embeddings of a trained recommender folder, which must match `vocabulary` when it records
    its item-vocabulary fingerprint."""
    config = json.loads(require_file(folder / CONFIG_NAME).read_text(encoding="utf-8"))
    recorded = config.get(ITEM_VOCAB_FINGERPRINT)
    if vocabulary is not None and recorded is not None and recorded != vocabulary.fingerprint:
        raise PreprocessingError(
            f"{folder} was trained with another item vocabulary than the tokenizer in {vocabulary.folder}"
        )
    vectors = check_vectors(checkpoint_item_vectors(folder), folder / SAFE_WEIGHTS_NAME)
    return table_by_token_ids(folder, vectors, config.get("num_special_tokens", NUM_SPECIAL_TOKENS), vocabulary)


def resolve_vocabulary(data_dir: str | None, embeddings: list[str]) -> ItemVocabulary | None:
    """The item tokenizer of `data_dir`, else of the first recommender folder among `embeddings` that holds one."""
    if data_dir is not None:
        vocabulary = read_item_vocabulary(data_dir)
        if vocabulary is None:
            raise PreprocessingError(
                f"{data_dir} holds no item tokenizer ({ITEM2ID_FILE}, or tokenizer/{ITEM2ID_FILE})"
            )
        return vocabulary
    folders = (read_item_vocabulary(path) for path in embeddings if Path(path).is_dir())
    return next((vocabulary for vocabulary in folders if vocabulary is not None), None)


def read_tables(
    embeddings: list[str], item_ids: list[str] | None, vocabulary: ItemVocabulary | None
) -> tuple[list[EmbeddingTable], int]:
    """Every table of `--embeddings` in token-id order, and the count of item ids dropped as unknown."""
    npy_tables = [path for path in embeddings if not Path(path).is_dir()]
    if item_ids is not None and len(item_ids) != len(npy_tables):
        raise PreprocessingError(
            f"--item-ids names {len(item_ids)} lists for {len(npy_tables)} .npy tables: give one list per .npy table"
        )
    id_lists = iter(item_ids or [])
    tables, unknown = [], 0
    for path in embeddings:
        if Path(path).is_dir():
            tables.append(read_model_table(Path(path), vocabulary))
        elif item_ids is not None:
            table, dropped = table_by_item_ids(path, next(id_lists), vocabulary)
            tables.append(table)
            unknown += dropped
        else:
            tables.append(table_by_token_ids(path, read_npy(path), NUM_SPECIAL_TOKENS, vocabulary))
    sizes = {len(table.vectors) for table in tables}
    if len(sizes) > 1:
        listed = ", ".join(f"{table.source}: {len(table.vectors)}" for table in tables)
        raise PreprocessingError(f"the tables have different numbers of token ids ({listed}): pass --data")
    return tables, unknown


def concatenate(tables: list[EmbeddingTable], normalize: str) -> EmbeddingTable:
    """The tables side by side (`[vocab_size, sum of dims]`), each row L2-normalised first when `normalize` is
    `"l2"`; an item is present when every table has it."""
    parts = []
    for table in tables:
        vectors = table.vectors
        if normalize == "l2":
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        parts.append(vectors)
    present = np.logical_and.reduce([table.present for table in tables])
    return EmbeddingTable(" + ".join(table.source for table in tables), np.concatenate(parts, axis=1), present)


def deduplicate(codes: np.ndarray) -> np.ndarray:
    """The de-duplication level: `[num_items, num_levels]` to `[num_items]`, each item's rank, in row order, among the
    items with the same code (0 for the first)."""
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    sorted_groups = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    ranks = np.empty(len(group), dtype=np.int64)
    ranks[order] = np.arange(len(group)) - group_start
    return ranks


def collision_statistics(codes: np.ndarray) -> dict[str, Any]:
    """Collisions of full codes (`[num_items, num_levels]`) before de-duplication."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return {
        "distinct_codes": len(counts),
        "collision_rate": 1 - len(counts) / len(codes),
        "items_sharing_a_code": int(counts[counts > 1].sum()),
        "largest_collision": int(counts.max()),
    }


def level_statistics(codes: np.ndarray, codebook_size: int) -> list[dict[str, Any]]:
    """Per level of `codes` (`[num_items, num_levels]`): codes used, usage (used / `codebook_size`) and perplexity
    (exp of the entropy of the level's code distribution; `codebook_size` when uniform, 1 when one code)."""
    levels = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        probabilities = counts[counts > 0] / len(codes)
        levels.append(
            {
                "level": level,
                "codes_used": int((counts > 0).sum()),
                "usage": float((counts > 0).mean()),
                "perplexity": float(math.exp(-(probabilities * np.log(probabilities)).sum())),
            }
        )
    return levels


@torch.no_grad()
def reconstruction_error(model: RQVAEModel, item_embeddings: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """The mean squared error of the RQ-VAE's reconstruction of `item_embeddings` (`[num_items, input_size]`) from
    their codes, and the fraction of the embeddings' variance it leaves unexplained."""
    squared_error = sum(
        (model.decode_codes(model.get_codes(batch)).cpu().float() - batch).pow(2).sum().item()
        for batch in item_embeddings.split(batch_size)
    )
    variance = (item_embeddings - item_embeddings.mean(0)).pow(2).sum().item()
    return {
        "reconstruction_mse": squared_error / item_embeddings.numel(),
        "unexplained_variance": squared_error / variance if variance > 0 else float("nan"),
    }


def train_rqvae(
    item_embeddings: torch.Tensor, config: RQVAEConfig, args: TrainingArguments
) -> tuple[RQVAEModel, TrainOutput]:
    """An RQ-VAE trained by `Trainer` on `item_embeddings` (`[num_items, input_size]`), its codebooks first
    initialised by k-means over every item (seeded by `args.seed`); and `Trainer.train`'s output."""
    set_seed(args.seed)
    model = RQVAEModel(config)
    model.initialize_codebooks(item_embeddings, generator=torch.Generator().manual_seed(args.seed))
    dataset = [{"item_embeddings": row} for row in item_embeddings]
    return model, Trainer(model=model, args=args, train_dataset=dataset).train()


def semantic_ids(model: RQVAEModel, table: EmbeddingTable) -> np.ndarray:
    """The full codes `[vocab_size, num_levels + 1]` of the items of `table`: the RQ-VAE's codes, then the
    de-duplication index; -1 on rows without an item."""
    codes = model.get_codes(torch.from_numpy(table.vectors[table.present])).numpy()
    full = np.full((len(table.vectors), codes.shape[1] + 1), MISSING_CODE, dtype=np.int64)
    full[table.present] = np.concatenate([codes, deduplicate(codes)[:, None]], axis=1)
    return full


def encode_items(folder: str | Path, vectors: np.ndarray) -> np.ndarray:
    """The codes `[num_items, num_levels]` of new items by the RQ-VAE saved in `folder`: what
    `Recommender.add_items` takes as a new item's `semantic_ids`. `vectors` `[num_items, input_size]` are the items'
    rows of the same table as the training codes were made from (of the same tables concatenated in the same order,
    each row-normalised as `--normalize`, which `codes.json` records, did). The de-duplication code is left out (it
    depends on the catalog)."""
    folder = Path(folder)
    vectors = check_vectors(np.asarray(vectors, dtype=np.float32), folder)
    model = RQVAEModel.from_pretrained(folder).eval()
    if vectors.shape[1] != model.config.input_size:
        raise PreprocessingError(
            f"{folder}: its RQ-VAE reads vectors of {model.config.input_size} values, got {vectors.shape[1]}."
        )
    with torch.no_grad():
        return model.get_codes(torch.from_numpy(vectors)).numpy()


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and each option's default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--embeddings", nargs="+", required=True, help=".npy tables or trained recommender folders")
    parser.add_argument("--output", required=True, help="the folder to write (RQ-VAE, codes, report)")
    parser.add_argument("--item-ids", nargs="+", help="one item-id list (.json list or text lines) per .npy table")
    parser.add_argument("--data", help="processed data folder whose item tokenizer gives the token ids")
    parser.add_argument("--normalize", choices=("none", "l2"), default="none", help="row normalisation of each table")
    parser.add_argument("--num-levels", type=int, default=3, help="codebooks (levels before de-duplication)")
    parser.add_argument("--codebook-size", type=int, default=256, help="codes per level")
    parser.add_argument("--latent-size", type=int, default=32, help="width of the quantised latent")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[512, 256, 128], help="encoder widths")
    parser.add_argument("--commitment-weight", type=float, default=0.25, help="beta of the commitment loss")
    parser.add_argument("--dead-code-steps", type=int, default=100, help="restart codes unused this long (0: never)")
    parser.add_argument("--epochs", type=float, default=200, help="training epochs over the items")
    parser.add_argument("--batch-size", type=int, default=256, help="items a training step")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds the model, k-means and training")
    args = parser.parse_args(argv)
    sizes = {name: getattr(args, name) for name in ("num_levels", "codebook_size", "latent_size", "batch_size")}
    for name, value in [*sizes.items(), *(("hidden_sizes", size) for size in args.hidden_sizes)]:
        if value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.epochs <= 0 or args.commitment_weight < 0 or args.dead_code_steps < 0:
        parser.error("--epochs must be positive, --commitment-weight and --dead-code-steps non-negative")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read the tables, train the RQ-VAE, write the output folder; returns the report."""
    check_replaceable(Path(args.output), (CODES_FILE, REPORT_FILE), PROG)  # before training, not after
    vocabulary = resolve_vocabulary(args.data, args.embeddings)
    tables, unknown_ids = read_tables(args.embeddings, args.item_ids, vocabulary)
    table = concatenate(tables, args.normalize)
    num_items = int(table.present.sum())
    if num_items < 2:
        raise PreprocessingError(f"{table.source}: {num_items} items have an embedding: nothing to quantise")
    without_embedding = int((~table.present[NUM_SPECIAL_TOKENS:]).sum())
    if without_embedding:
        logger.info(
            "%d of %d items have no embedding: their codes are missing (-1)",
            without_embedding,
            len(table.present) - NUM_SPECIAL_TOKENS,
        )
    config = RQVAEConfig(
        input_size=table.vectors.shape[1],
        hidden_sizes=args.hidden_sizes,
        latent_size=args.latent_size,
        num_levels=args.num_levels,
        codebook_size=args.codebook_size,
        commitment_weight=args.commitment_weight,
        dead_code_steps=args.dead_code_steps,
    )
    item_embeddings = torch.from_numpy(table.vectors[table.present])
    steps = math.ceil(args.epochs * math.ceil(num_items / args.batch_size))
    with tempfile.TemporaryDirectory() as trainer_dir:
        training_args = TrainingArguments(
            output_dir=trainer_dir,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=args.learning_rate,
            logging_steps=max(1, steps // LOGGED_STEPS),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,  # a few thousand small rows: nothing to gain
            seed=args.seed,
        )
        model, training = train_rqvae(item_embeddings, config, training_args)
    codes = semantic_ids(model, table)
    item_codes = codes[table.present]
    report = {
        "embeddings": [source.source for source in tables],
        "items": num_items,
        "items_without_embedding": without_embedding,
        "unknown_item_ids_dropped": unknown_ids,
        "training_steps": training.global_step,
        "training_loss": training.training_loss,
        **reconstruction_error(model, item_embeddings),
        "levels": level_statistics(item_codes[:, :-1], config.codebook_size),
        "dead_code_restarts": [int(codebook.restarts) for codebook in model.quantizer.codebooks],
        **collision_statistics(item_codes[:, :-1]),
        "max_dedup_index": int(item_codes[:, -1].max()),
    }
    with replace_folder(args.output, (CODES_FILE, REPORT_FILE), PROG) as folder:
        model.save_pretrained(folder)
        save_file({"codes": torch.from_numpy(codes)}, folder / CODES_FILE)
        atomic_write_json(
            folder / CODES_JSON,
            {
                "vocab_size": len(codes),
                "num_special_tokens": NUM_SPECIAL_TOKENS,
                "num_levels": config.num_levels,
                "level_sizes": [config.codebook_size] * config.num_levels + [report["max_dedup_index"] + 1],
                "missing_code": MISSING_CODE,
                "vocabulary_fingerprint": vocabulary.fingerprint if vocabulary else None,
                "embeddings": report["embeddings"],
                "normalize": args.normalize,
                "codes": codes.tolist(),
            },
            indent=None,
        )
        atomic_write_json(folder / REPORT_FILE, report)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    with cli_errors(PROG):
        report = run(args)
    levels = ", ".join(
        f"{level['codes_used']} codes (perplexity {level['perplexity']:.1f})" for level in report["levels"]
    )
    logger.info(
        "%d items: reconstruction MSE %.4g (%.1f%% of the variance unexplained); levels: %s; collision rate %.4f "
        "before de-duplication, largest de-duplication index %d; saved to %s",
        report["items"],
        report["reconstruction_mse"],
        100 * report["unexplained_variance"],
        levels,
        report["collision_rate"],
        report["max_dedup_index"],
        args.output,
    )
    return report


if __name__ == "__main__":
    main()
