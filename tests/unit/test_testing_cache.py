"""The shared model cache of aoti_cy.testing under concurrent writers (test
workers compile and save the same entries at once)."""

import os
import threading

import torch

from aoti_cy import testing


def test_sample_inputs_saved_by_many_threads_at_once_all_land(tmp_path):
    path = str(tmp_path / "model.pt2")
    sample = (torch.arange(4096.0).reshape(64, 64),)
    errors = []
    start = threading.Barrier(8)

    def save():
        try:
            start.wait()
            for _ in range(25):
                testing._save_sample_inputs(path, sample, {})
                try:
                    os.unlink(path + ".inputs.pt")       # the next round saves again
                except FileNotFoundError:
                    pass
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=save) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    testing._save_sample_inputs(path, sample, {})
    (saved,) = torch.load(path + ".inputs.pt")
    torch.testing.assert_close(saved, sample[0])
    assert sorted(os.listdir(tmp_path)) == ["model.pt2.inputs.pt"]   # no temporary left
