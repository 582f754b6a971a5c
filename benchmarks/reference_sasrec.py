"""`ReferenceSASRec`: a benchmark-only re-implementation of the model of the reference PyTorch SASRec
(pmixer/SASRec.pytorch, which cannot be installed or downloaded here), following its published architecture. It is
NOT the reference code.

Its blocks differ from `hf_sasrec`'s: LayerNorm (eps 1e-8) on the queries only (keys and values read the raw
states), the attention residual added to the normalised queries, no dropout on the attention output, a Conv1d
feed-forward `conv2(relu(dropout(conv1 x)))` with dropout after it, padded positions zeroed after every block, and
padding positions left as attention keys (only the causal mask). Items are 1-based (0 is padding), positions count
1..length over the left-padded window, so the reference's windows of `max_length` give the last item position
`max_length` whatever the history's length.

`reference_inputs` maps batches of `hf_sasrec.data_collator.NextItemCollator` (item token ids) to its item ids.
"""

import torch
from torch import nn


class ReferenceSASRec(nn.Module):
    """SASRec as the reference PyTorch code builds it (see the module docstring)."""

    def __init__(
        self,
        num_items: int,
        max_length: int = 50,
        hidden: int = 50,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_length + 1, hidden, padding_idx=0)
        self.emb_dropout = nn.Dropout(dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(blocks))
        self.attentions = nn.ModuleList(nn.MultiheadAttention(hidden, heads, dropout) for _ in range(blocks))
        self.forward_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(blocks))
        self.forwards = nn.ModuleList(
            nn.Sequential(nn.Conv1d(hidden, hidden, 1), nn.Dropout(dropout), nn.ReLU(), nn.Conv1d(hidden, hidden, 1))
            for _ in range(blocks)
        )
        self.dropout = nn.Dropout(dropout)
        self.last_norm = nn.LayerNorm(hidden, eps=1e-8)

    def reset_parameters_as_reference(self) -> None:
        """The reference's initialisation: Xavier-normal for every parameter of two or more dimensions (vectors keep
        PyTorch's defaults), then zero padding embeddings."""
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            self.pos_emb.weight[0].zero_()

    def log2feats(self, seqs: torch.LongTensor) -> torch.Tensor:
        """`[batch, length]` item ids (0 = padding, left) to `[batch, length, hidden]`."""
        states = self.item_emb(seqs) * self.item_emb.embedding_dim**0.5
        positions = torch.arange(1, seqs.shape[1] + 1).expand_as(seqs) * seqs.ne(0)
        states = self.emb_dropout(states + self.pos_emb(positions))
        keep = seqs.ne(0)[..., None]
        states = states * keep
        causal = ~torch.tril(torch.ones(seqs.shape[1], seqs.shape[1], dtype=torch.bool))
        for attention_norm, attention, forward_norm, feed_forward in zip(
            self.attention_norms, self.attentions, self.forward_norms, self.forwards, strict=True
        ):
            states = states.transpose(0, 1)
            queries = attention_norm(states)
            output, _ = attention(queries, states, states, attn_mask=causal)
            states = (queries + output).transpose(0, 1)
            states = forward_norm(states)
            ffn = self.dropout(feed_forward(states.transpose(-1, -2)).transpose(-1, -2))
            states = (states + ffn) * keep
        return self.last_norm(states)

    def loss(self, seqs: torch.LongTensor, positives: torch.LongTensor, negatives: torch.LongTensor) -> torch.Tensor:
        """BCE of each position's next item against one negative; all `[batch, length]` item ids, 0 = no target."""
        features = self.log2feats(seqs)
        positive_logits = (features * self.item_emb(positives)).sum(-1)
        negative_logits = (features * self.item_emb(negatives)).sum(-1)
        mask = positives.ne(0)
        criterion = nn.BCEWithLogitsLoss()
        return criterion(positive_logits[mask], torch.ones_like(positive_logits[mask])) + criterion(
            negative_logits[mask], torch.zeros_like(negative_logits[mask])
        )


def reference_inputs(input_ids: torch.LongTensor, num_special_tokens: int, pad_to: int = 0) -> torch.LongTensor:
    """Item token ids `[batch, length]` (0 = padding, items from `num_special_tokens`; labels may hold -100) to the
    reference's 1-based item ids, left-padded with 0 to at least `pad_to` positions."""
    items = (input_ids - (num_special_tokens - 1)).clamp(min=0)
    return nn.functional.pad(items, (max(pad_to - items.shape[1], 0), 0))
