"""Runs with one seed are paired down to the pixels: baseline, HDML and GCA-HNG see the same augmented batches."""
import torch

import gca.train.trainer as trainer_module
from gca.testing.runs import write_pattern_folder
from gca.train import Trainer, load_config


def test_same_seed_same_augmented_batches_whatever_the_model_draws(tmp_path, monkeypatch):
    write_pattern_folder(tmp_path / "data", classes=8, per_class=4)
    seen = {}
    real_step = trainer_module.train_step

    def recording_step(model, objective, images, labels, optimisers, **kwargs):
        seen.setdefault(type(objective).__name__, []).append((images.clone(), labels.clone()))
        return real_step(model, objective, images, labels, optimisers, **kwargs)
    monkeypatch.setattr(trainer_module, "train_step", recording_step)
    for name, generator in (("baseline", "gca.enabled=false"), ("hdml", "gca.generator=hdml"),
                            ("gca", "gca.enabled=true")):
        cfg = load_config(None, [
            f"data.root={tmp_path / 'data'}", "data.dataset=imagefolder", "data.dataset_kwargs={image_mode: L}",
            "data.transform=omniglot", "data.image_size=16", "data.val_fraction=0", "data.classes_per_batch=2",
            "data.samples_per_class=2", "model.backbone=omniglot_cnn", "model.embedding_dim=16", "gca.num_layers=1",
            "gca.heads=2", "solver.epochs=1", "solver.max_steps=3", "plots=false", f"output_dir={tmp_path / 'runs'}",
            f"name={name}", generator])
        Trainer(cfg, progress=False).fit()
    assert len(seen["MetricLossObjective"]) == 3
    for step in range(3):
        base_images, base_labels = seen["MetricLossObjective"][step]
        for other in ("HDMLInterpolation", "GCAHNG"):
            assert torch.equal(seen[other][step][1], base_labels)
            assert torch.equal(seen[other][step][0], base_images), (other, step)
    # the augmentation is random: the same items in two steps would not look alike (a real transform ran)
    assert not torch.equal(seen["MetricLossObjective"][0][0], seen["MetricLossObjective"][1][0])
