"""Settings of the tiny models the tests train (seconds on one CPU thread), in one place.
The session fixtures of tests/conftest.py build and train with these."""

# The graph encoder of every tiny pipeline.
TINY_ENCODER = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)

# `train --preset shapes` overrides for the tiny chain (2 steps per stage); the base part
# takes ShapesBaseConfig.tiny().
TINY_SHAPES_METHOD = [
    "train_size=16", "val_size=4", "gca.max_steps=2", "gca.batch_size=4",
    "finetune.max_steps=2", "finetune.batch_size=4", "finetune.lr_warmup_steps=0",
    'encoder={"embed_dim": 16, "hidden_dim": 16, "triple_hidden_dim": 16, "num_layers": 1,'
    ' "global_dim": 16}',
    "layout.max_steps=2", "layout.batch_size=4", "layout.train_size=32",
    "layout.lr_warmup_steps=0", "layout_generator.embed_dim=16", "layout_encoder.channels=3",
    "distill.max_steps=2", "distill.batch_size=4",
]  # fmt: skip
