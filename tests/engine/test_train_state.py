"""TrainState: what a checkpoint's ``state`` holds, typed; a misspelt key fails instead of persisting."""
from __future__ import annotations

import math

import pytest
import torch

from molre_lib.engine.train import TrainState

# the keys of the dict the trainer checkpointed before TrainState (old checkpoints still load)
STATE_KEYS = ["step", "epoch", "step_in_epoch", "best_auc", "best_step", "best_state", "evals_since_best",
              "stopped_early", "done", "elapsed", "last_val_auc"]


def test_round_trip_keeps_tensors_and_key_order():
    st = TrainState(step=7, epoch=1, step_in_epoch=2, best_auc=0.7, best_step=6, best_state={"w": torch.ones(2)})
    d = st.to_dict()
    assert list(d) == STATE_KEYS
    assert d["best_state"]["w"] is st.best_state["w"]  # not a deep copy of every tensor
    back = TrainState.from_dict(d)
    assert back.to_dict().keys() == d.keys() and back.step == 7 and torch.equal(back.best_state["w"], torch.ones(2))
    assert TrainState().best_auc == -math.inf and TrainState().last_val_auc is None


def test_unknown_key_on_load_is_an_error():
    d = TrainState().to_dict()
    d["stpe"] = 3
    with pytest.raises(ValueError, match="Unknown TrainState key: 'stpe'"):
        TrainState.from_dict(d)


def test_misspelt_attribute_is_an_error():
    st = TrainState()
    with pytest.raises(AttributeError):
        st.stpe = 3  # type: ignore[attr-defined]
