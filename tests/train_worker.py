"""`train` from a config file, for test_training's multi-process test (run under accelerate launch).

accelerate launch --multi_gpu --num_processes 2 tests/train_worker.py config.json
"""

import sys

from sg2image.training import load_config, train

if __name__ == "__main__":
    train(load_config(sys.argv[1], sys.argv[2:]))
