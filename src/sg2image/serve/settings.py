"""What a server accepts and how it batches: one dataclass, one comment per field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    # Most images the pipeline generates in one forward pass; requests waiting with the same
    # steps, guidance and sampler are joined up to this (dynamic batching). 1 turns it off.
    max_batch: int = 8
    # Most requests waiting for the worker (the batch running not counted); one more gets
    # 503 with a Retry-After header.
    max_queue: int = 32
    # Seconds a generate request may take from arrival to answer (waiting + generating);
    # past it the request gets 503 and its work is dropped if it has not started yet.
    timeout_s: float = 120.0
    # Most sampler steps a request may ask for.
    max_steps: int = 100
    # Most images one request may ask for (graphs x images per graph).
    max_images: int = 8
    # Largest request body in bytes; larger ones get 413 before they are parsed.
    max_body_bytes: int = 256 * 1024
    # Most objects per scene graph (the model's own limit applies too, if lower).
    max_objects: int = 16
    # Most relationships per scene graph.
    max_relationships: int = 64
    # Longest object or predicate label accepted by /draw (drawing cost grows with text).
    max_label_chars: int = 64
    # Seconds the worker waits for more requests before running a batch that is not full;
    # 0 runs at once (requests arriving while a batch runs are still batched together).
    batch_wait_s: float = 0.0
    # The Retry-After value (seconds) sent with 503 answers.
    retry_after_s: int = 5
    # Defaults of a generate request that does not say.
    default_steps: int = 20
    default_guidance: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_steps", "max_images", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if not 1 <= self.default_steps <= self.max_steps:
            raise ValueError(f"default_steps must be in [1, max_steps={self.max_steps}]")
