"""TEST SHIM (gradlint benchmarks): generated images in place of downloaded data sets."""
import numpy as np
import torch


class _Generated(torch.utils.data.Dataset):
    def __init__(self, size, shape, classes, transform=None, seed=0):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(size, *shape), dtype=np.uint8)
        self.targets = rng.integers(0, classes, size=size)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class MNIST(_Generated):
    def __init__(self, root=None, train=True, transform=None, target_transform=None, download=False):
        super().__init__(512 if train else 128, (28, 28), 10, transform, seed=0 if train else 1)


class FakeData(_Generated):
    def __init__(self, size=1000, image_size=(3, 224, 224), num_classes=10, transform=None, target_transform=None,
                 random_offset=0):
        c, h, w = image_size
        super().__init__(min(size, 512), (h, w, c), num_classes, transform)
