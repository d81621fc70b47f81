"""`train` from a config file, for test_training's multi-process test (run under torchrun).

python -m torch.distributed.run --nproc_per_node 2 tests/train_worker.py config.json
"""

import sys

from sg2image.training import load_config, train

if __name__ == "__main__":
    train(load_config(sys.argv[1], sys.argv[2:]))
