"""The paper configs follow the authors where METHOD says what they do (D10, head init, class sampling)."""
import pytest
import torch

from gca.testing.runs import write_pattern_folder
from gca.train import Trainer, load_config
from gca.train.config import CONFIG_DIR

PAPER = sorted(str(p.relative_to(CONFIG_DIR))[:-5] for p in (CONFIG_DIR / "paper").glob("*.yaml"))


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_follow_the_authors(name):
    cfg = load_config(name)
    assert cfg.data.class_sampling == "uniform"
    assert cfg.model.head_init == ("orthogonal" if "dino" in name else "default")
    if cfg.model.bn_freeze:
        assert not cfg.model.bn_freeze_affine          # BN weights train after warm-up


@pytest.mark.parametrize("affine_frozen", [True, False])
def test_bn_weights_train_after_warmup_unless_frozen(tmp_path, affine_frozen):
    write_pattern_folder(tmp_path / "data", classes=6, per_class=4)
    cfg = load_config(None, [
        f"data.root={tmp_path / 'data'}", "data.dataset=imagefolder", "data.dataset_kwargs={image_mode: L}",
        "data.transform=omniglot", "data.image_size=16", "data.val_fraction=0", "data.classes_per_batch=2",
        "data.samples_per_class=2", "model.backbone=omniglot_cnn", "model.embedding_dim=16", "gca.enabled=false",
        "model.bn_freeze=true", f"model.bn_freeze_affine={str(affine_frozen).lower()}", "solver.warmup_epochs=1",
        "solver.epochs=2", "solver.steps_per_epoch=2", "plots=false", f"output_dir={tmp_path / 'runs'}"])
    trainer = Trainer(cfg, progress=False)
    bn = [m for m in trainer.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn
    snapshots = []
    real_end = trainer._end_epoch

    def end_epoch():
        snapshots.append([(m.weight.detach().clone(), m.running_mean.clone()) for m in bn])
        real_end()
    trainer._end_epoch = end_epoch
    start = [(m.weight.detach().clone(), m.running_mean.clone()) for m in bn]
    trainer.fit()
    after_warmup, after_training = snapshots
    for (w0, r0), (w1, r1), (w2, r2) in zip(start, after_warmup, after_training):
        assert torch.equal(w0, w1)                          # warm-up: the whole backbone is frozen
        assert torch.equal(r0, r2)                          # running statistics never move under bn_freeze
        assert torch.equal(w1, w2) == affine_frozen          # BN weights move after warm-up unless frozen
