"""RQ-VAE: an MLP autoencoder whose latent vector is quantised by a stack of codebooks, each quantising the residual
the previous ones left (Lee et al., CVPR 2022). TIGER (Rajput et al., NeurIPS 2023) uses it to turn item content
embeddings into semantic ids, the codes chosen at each level.

Training follows VQ-VAE: the decoder reads the quantised latent through a straight-through estimator, so the
reconstruction gradient reaches the encoder; the codebook loss moves the chosen codes towards the encoder's residuals
and the commitment loss (weight `commitment_weight`) the encoder's residuals towards the chosen codes. Each codebook
starts from a k-means of its level's residuals, and a code that no batch chose for `dead_code_steps` steps is
restarted at a residual of the current batch, so that codebooks stay in use.
"""

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ModelOutput

from .configuration_rqvae import RQVAEConfig


def squared_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, `[num_points, dim]` and `[num_centroids, dim]` to `[num_points, num_centroids]`."""
    return (points.pow(2).sum(-1, keepdim=True) - 2 * points @ centroids.T + centroids.pow(2).sum(-1)[None, :]).clamp(
        min=0
    )


def mean_squared_distance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The squared Euclidean distance of each row `[batch, dim]` to its target, averaged over the rows: a loss that
    does not shrink with the width `dim` (a per-coordinate mean over 384 dimensions would be about 400 times smaller
    than the quantisation losses over a 32-wide latent, and the latent would collapse towards zero)."""
    return (predicted - target).pow(2).sum(-1).mean()


def sample_rows(points: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`count` rows of `points` (`[num_points, dim]`) drawn at random: distinct rows when there are enough, else
    with replacement. Returns `[count, dim]`; `generator` (a CPU generator) makes the draw reproducible."""
    if count <= len(points):
        rows = torch.randperm(len(points), generator=generator)[:count]
    else:
        rows = torch.randint(len(points), (count,), generator=generator)
    return points[rows.to(points.device)]


def kmeans_plus_plus(
    points: torch.Tensor, num_clusters: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each next centre is a point drawn with probability
    proportional to its squared distance to the nearest centre so far. `[num_points, dim]` to `[num_clusters, dim]`;
    once every distinct point is a centre, further centres repeat random points."""
    first = torch.randint(len(points), (1,), generator=generator).to(points.device)
    centers = [points[first]]
    closest = squared_distances(points, centers[0])[:, 0]
    for _ in range(1, num_clusters):
        if closest.sum() > 0:
            index = torch.multinomial(closest.cpu(), 1, generator=generator).to(points.device)
        else:
            index = torch.randint(len(points), (1,), generator=generator).to(points.device)
        centers.append(points[index])
        closest = torch.minimum(closest, squared_distances(points, centers[-1])[:, 0])
    return torch.cat(centers)


def kmeans(
    points: torch.Tensor, num_clusters: int, num_iterations: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Lloyd's k-means from a k-means++ seeding: `[num_points, dim]` to centroids `[num_clusters, dim]` (float32).
    A cluster left empty keeps its previous centroid. `generator` (a CPU generator) makes it reproducible."""
    points = points.float()
    centroids = kmeans_plus_plus(points, num_clusters, generator)
    for _ in range(num_iterations):
        assignment = squared_distances(points, centroids).argmin(-1)
        counts = torch.bincount(assignment, minlength=num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class RQVAEMLP(nn.Module):
    """Linear layers of widths `sizes` (first = input, last = output) with `activation` between them, none after the
    last: `[batch, sizes[0]]` to `[batch, sizes[-1]]`. The encoder and, with the widths reversed, the decoder."""

    def __init__(self, sizes: list[int], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(width_in, width_out) for width_in, width_out in itertools.pairwise(sizes)
        )
        self.act_fn = ACT2FN[activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            hidden_states = self.act_fn(layer(hidden_states))
        return self.layers[-1](hidden_states)


class RQVAECodebook(nn.Module):
    """One level of the residual quantiser: `codebook_size` codes of width `latent_size`, with the state of their
    k-means initialisation and of dead-code restarts (buffers, saved with the model).

    Buffers:
        initialized: `[]` bool, whether the codes were initialised by k-means (or loaded).
        steps_since_used: `[codebook_size]`, training steps since a batch last chose each code.
        restarts: `[]`, codes restarted so far.
    """

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.codebook_size, config.latent_size))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("steps_since_used", torch.zeros(config.codebook_size, dtype=torch.long))
        self.register_buffer("restarts", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def initialize(self, residuals: torch.Tensor, num_iterations: int, generator: torch.Generator | None = None):
        """Set the codes to the k-means centroids of `residuals` (`[num_points, latent_size]`)."""
        self.weight.copy_(kmeans(residuals, len(self.weight), num_iterations, generator))
        self.initialized.fill_(True)
        self.steps_since_used.zero_()

    @torch.no_grad()
    def nearest(self, residuals: torch.Tensor) -> torch.LongTensor:
        """The nearest code of each residual: `[batch, latent_size]` to `[batch]`."""
        return squared_distances(residuals.float(), self.weight.float()).argmin(-1)

    @torch.no_grad()
    def restart_dead_codes(self, codes: torch.LongTensor, residuals: torch.Tensor, dead_code_steps: int) -> None:
        """Count a training step: the codes chosen in `codes` (`[batch]`) are in use, and every code unused for
        `dead_code_steps` steps moves to a random row of `residuals` (`[batch, latent_size]`)."""
        self.steps_since_used += 1
        self.steps_since_used[codes] = 0
        if dead_code_steps == 0:
            return
        dead = (self.steps_since_used >= dead_code_steps).nonzero().squeeze(-1)
        if len(dead):
            self.weight[dead] = sample_rows(residuals, len(dead)).to(self.weight.dtype)
            self.steps_since_used[dead] = 0
            self.restarts += len(dead)


@dataclass
class RQVAEQuantizerOutput(ModelOutput):
    r"""
    quantized: `[batch, latent_size]` the sum of the chosen codes of every level.
    codes: `[batch, num_levels]` the code chosen at each level.
    codebook_loss: scalar, the squared distance of each level's chosen codes to the (detached) residuals they
        quantise (summed over the latent, averaged over the batch), summed over levels.
    commitment_loss: scalar, the same distance with the codes detached instead, summed over levels.
    """

    quantized: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None


class RQVAEResidualQuantizer(nn.Module):
    """`num_levels` codebooks: level `l` quantises the residual `r_l = z - (e_0 + ... + e_{l-1})` to its nearest code
    `e_l`, so that each level refines the previous ones."""

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        self.kmeans_iterations = config.kmeans_iterations
        self.dead_code_steps = config.dead_code_steps
        self.codebooks = nn.ModuleList(RQVAECodebook(config) for _ in range(config.num_levels))

    @torch.no_grad()
    def initialize(self, latent: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Initialise every codebook, level by level, by k-means of its residuals of `latent` (`[num_points,
        latent_size]`)."""
        residuals = latent.float()
        for codebook in self.codebooks:
            codebook.initialize(residuals, self.kmeans_iterations, generator)
            residuals = residuals - codebook.weight[codebook.nearest(residuals)]

    def lookup(self, codes: torch.LongTensor) -> torch.Tensor:
        """The quantised latent of `codes`: `[batch, num_levels]` to `[batch, latent_size]`."""
        return sum(codebook.weight[codes[:, level]] for level, codebook in enumerate(self.codebooks))

    def forward(self, latent: torch.Tensor) -> RQVAEQuantizerOutput:
        """`latent`: `[batch, latent_size]`. In training mode a codebook not yet initialised is initialised by
        k-means of this batch's residuals, and dead codes are restarted."""
        residuals = latent
        quantized = torch.zeros_like(latent)
        codes, codebook_loss, commitment_loss = [], 0.0, 0.0
        for codebook in self.codebooks:
            if self.training and not codebook.initialized:
                codebook.initialize(residuals.detach(), self.kmeans_iterations)
            level_codes = codebook.nearest(residuals.detach())
            chosen = codebook.weight[level_codes]
            codebook_loss = codebook_loss + mean_squared_distance(chosen, residuals.detach())
            commitment_loss = commitment_loss + mean_squared_distance(residuals, chosen.detach())
            if self.training:
                codebook.restart_dead_codes(level_codes, residuals.detach(), self.dead_code_steps)
            quantized = quantized + chosen.detach()
            residuals = residuals - chosen.detach()
            codes.append(level_codes)
        return RQVAEQuantizerOutput(
            quantized=quantized,
            codes=torch.stack(codes, dim=-1),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
        )


class RQVAEPreTrainedModel(PreTrainedModel):
    config: RQVAEConfig
    config_class = RQVAEConfig
    base_model_prefix = "rqvae"
    main_input_name = "item_embeddings"
    _no_split_modules = ["RQVAEResidualQuantizer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            # PyTorch's default: uniform in +-1/sqrt(fan_in), which keeps activations at scale through the MLP.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, RQVAECodebook):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.initialized)
            init.zeros_(module.steps_since_used)
            init.zeros_(module.restarts)


@dataclass
class RQVAEOutput(ModelOutput):
    r"""
    loss: scalar, `reconstruction_loss + codebook_loss + commitment_weight * commitment_loss`.
    reconstruction_loss: scalar, the squared distance of `reconstruction` to the input, summed over its dimensions
        and averaged over the batch.
    codebook_loss: scalar, see [`RQVAEQuantizerOutput`].
    commitment_loss: scalar, see [`RQVAEQuantizerOutput`] (not yet weighted).
    codes: `[batch, num_levels]` the semantic id of each input.
    reconstruction: `[batch, input_size]` the decoded quantised latent.
    latent: `[batch, latent_size]` the encoder's output.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None


class RQVAEModel(RQVAEPreTrainedModel):
    """The RQ-VAE: MLP encoder, residual quantiser, MLP decoder. `forward` returns the training loss with the codes;
    [`get_codes`] gives the semantic ids of any number of items, [`decode_codes`] the embeddings they stand for."""

    def __init__(self, config: RQVAEConfig):
        super().__init__(config)
        self.encoder = RQVAEMLP([config.input_size, *config.hidden_sizes, config.latent_size], config.hidden_act)
        self.quantizer = RQVAEResidualQuantizer(config)
        self.decoder = RQVAEMLP(
            [config.latent_size, *reversed(config.hidden_sizes), config.input_size], config.hidden_act
        )
        self.post_init()

    def forward(self, item_embeddings: torch.FloatTensor) -> RQVAEOutput:
        r"""
        Args:
            item_embeddings: `[batch, input_size]` the item vectors to encode and reconstruct.

        Returns:
            [`RQVAEOutput`]. In training mode a codebook not yet initialised is first initialised from this batch
            (see [`initialize_codebooks`] to use every item instead), and dead codes are restarted.
        """
        latent = self.encoder(item_embeddings)
        quantized = self.quantizer(latent)
        # Straight-through: the decoder reads the quantised latent, its gradient flows to the encoder as if it had
        # read `latent`.
        reconstruction = self.decoder(latent + (quantized.quantized - latent).detach())
        reconstruction_loss = mean_squared_distance(reconstruction, item_embeddings)
        loss = (
            reconstruction_loss + quantized.codebook_loss + self.config.commitment_weight * quantized.commitment_loss
        )
        return RQVAEOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=quantized.codebook_loss,
            commitment_loss=quantized.commitment_loss,
            codes=quantized.codes,
            reconstruction=reconstruction,
            latent=latent,
        )

    @torch.no_grad()
    def initialize_codebooks(
        self, item_embeddings: torch.Tensor, generator: torch.Generator | None = None, batch_size: int = 4096
    ) -> None:
        """Initialise every codebook by k-means of its level's residuals over all of `item_embeddings`
        (`[num_items, input_size]`), encoded in batches of `batch_size`."""
        latent = torch.cat(
            [self.encoder(batch.to(self.device, self.dtype)) for batch in item_embeddings.split(batch_size)]
        )
        self.quantizer.initialize(latent, generator)

    @torch.no_grad()
    def get_codes(self, item_embeddings: torch.Tensor, batch_size: int = 4096) -> torch.LongTensor:
        """The semantic ids of `item_embeddings`: `[num_items, input_size]` to `[num_items, num_levels]`, computed in
        batches of `batch_size` without changing the codebooks."""
        was_training = self.training
        self.eval()
        codes = [self(batch.to(self.device, self.dtype)).codes.cpu() for batch in item_embeddings.split(batch_size)]
        self.train(was_training)
        return torch.cat(codes)

    @torch.no_grad()
    def decode_codes(self, codes: torch.LongTensor) -> torch.Tensor:
        """The item vectors that semantic ids stand for: `[batch, num_levels]` to `[batch, input_size]`."""
        return self.decoder(self.quantizer.lookup(codes.to(self.device)))


__all__ = ["RQVAEModel", "RQVAEPreTrainedModel"]
