"""What a server accepts and how it batches: one dataclass, one comment per field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    # Most images the pipeline generates in one forward pass; requests waiting with the same
    # steps, guidance and sampler are joined up to this (dynamic batching). 1 turns it off.
    max_batch: int = 8
    # Most requests waiting for the worker (the batch running not counted); one more gets
    # 503 with a Retry-After header. /draw and /validate have a queue of this size too, in
    # front of their own worker thread.
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
    # /draw's own bounds (its graphs need not use the model's names): drawing cost grows with
    # the text; a graph of 5 objects and 64 relationships, all labels 64 characters long,
    # took 0.5 s of CPU at 768 px; within these bounds at most about 0.16 s.
    max_label_chars: int = 32  # longest object or predicate label
    max_draw_size: int = 512  # largest picture side, pixels
    # Host header names accepted besides localhost, 127.0.0.1 and [::1] (the bound address,
    # say): a web page elsewhere cannot reach a loopback server by DNS rebinding, since its
    # requests name the page's host. "*" accepts any Host.
    allow_hosts: tuple[str, ...] = ()
    # Seconds the worker waits for more requests before running a batch that is not full;
    # 0 runs at once (requests arriving while a batch runs are still batched together).
    batch_wait_s: float = 0.0
    # The Retry-After value (seconds) sent with 503 answers.
    retry_after_s: int = 5
    # Largest image side a generate request may ask for, pixels (cost grows with the area);
    # None: twice the size the model was trained at.
    max_image_side: int | None = None
    # Defaults of a generate request that does not say.
    default_steps: int = 20
    default_guidance: float = 2.0

    def largest_side(self, default_side: int, step: int) -> int:
        """The largest image side a request may ask for: ``max_image_side`` or twice the
        model's default side, rounded down to a multiple of ``step`` (the VAE's factor)."""
        side = self.max_image_side or 2 * default_side
        return side - side % step

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_queue", "max_steps", "max_images", "max_body_bytes")
        for name in (*positive, "max_label_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if not 1 <= self.default_steps <= self.max_steps:
            raise ValueError(f"default_steps must be in [1, max_steps={self.max_steps}]")
        if self.max_draw_size < 64:
            raise ValueError(f"max_draw_size must be at least 64, got {self.max_draw_size}")
        self.allow_hosts = tuple(self.allow_hosts)
