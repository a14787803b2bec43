"""A LightningModule on mixkit's loader and mixing, for tests/test_lightning.py (a script: Lightning's DDP relaunches it).

``python tests/lightning_script.py DEVICES OUT_DIR inside|outside``: 'inside' builds the loaders in
``train_dataloader()`` (docs/training.md's pattern), 'outside' builds the training loader before ``fit``.
Each process saves the sample ids it trained on; sample i is an image whose pixels are all i.
"""

import sys

import lightning as L
import torch
from timm.loss import SoftTargetCrossEntropy

import mixkit
from mixkit.data import create_loader

N, K = 96, 4


def data():
    ids = torch.arange(N, dtype=torch.uint8)
    return ids.view(N, 1, 1, 1).expand(N, 1, 16, 16).contiguous(), (torch.arange(N) % K)


def loader(training):
    return create_loader("memory", data(), batch_size=8 if training else 16, is_training=training, mean=(0.0,),
                         std=(1 / 255,), pad=0, seed=0)


class Module(L.LightningModule):
    def __init__(self, build_inside):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                       torch.nn.Flatten(), torch.nn.Linear(8, K))
        self.build_inside, self.seen, self.mixed = build_inside, [], 0

    def setup(self, stage):
        # Created here, not in __init__: a mixing function holds the model and refuses to be pickled or copied.
        self.mixup_fn = mixkit.create_mixup("manifold", model=self.net, num_classes=K, layers=["1"])
        self.loss_fn = SoftTargetCrossEntropy()

    def train_dataloader(self):
        return loader(True)

    def val_dataloader(self):
        return loader(False)

    def training_step(self, batch, index):
        x, y = batch
        self.seen.append(x[:, 0, 8, 8].round().long())  # the sample ids, read before the mix
        x, target = self.mixup_fn(x / 255, y)
        loss = self.loss_fn(self.net(x), target)
        self.mixed += int(self.mixup_fn.last_draw.mixed)
        return loss

    def validation_step(self, batch, index):
        x, y = batch
        self.log("val_acc", (self.net(x / 255).argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


if __name__ == "__main__":
    devices, out, where = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    module = Module(where == "inside")
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        enable_model_summary=False)
    trainer.fit(module, train_dataloaders=None if where == "inside" else loader(True))
    torch.save({"ids": torch.cat(module.seen), "mixed": module.mixed, "steps": len(module.seen)},
               f"{out}/rank{trainer.global_rank}.pt")
