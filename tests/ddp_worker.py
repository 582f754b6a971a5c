"""`torchrun` entry point of the DDP test: `hf_sasrec.sft`, recording per rank the users it trained on and how many
models it wrote, in `OUTPUT_DIR/rank{RANK}.json`."""

import json
import os
import sys
from pathlib import Path

from hf_sasrec import sft
from hf_sasrec.data_collator import NextItemCollator
from hf_sasrec.modeling_sasrec import SASRecForCausalLM

RANK = int(os.environ["RANK"])
SEEN = {"users": [], "saves": 0}
SAVE_PRETRAINED = SASRecForCausalLM.save_pretrained


class RecordingCollator(NextItemCollator):
    def __call__(self, rows):
        if self.for_training:
            SEEN["users"] += [row["user_id"] for row in rows]
        return super().__call__(rows)


def recording_save_pretrained(model, *args, **kwargs):
    """Count the saves that write files (transformers passes `is_main_process=False` to the other ranks)."""
    SEEN["saves"] += int(kwargs.get("is_main_process", True))
    return SAVE_PRETRAINED(model, *args, **kwargs)


if __name__ == "__main__":
    sft.NextItemCollator = RecordingCollator
    SASRecForCausalLM.save_pretrained = recording_save_pretrained
    arguments = sys.argv[1:]
    sft.main(arguments)
    output_dir = next(argument.split("=", 1)[1] for argument in arguments if argument.startswith("--output_dir="))
    (Path(output_dir) / f"rank{RANK}.json").write_text(json.dumps(SEEN))
