"""TEST SHIM (gradlint benchmarks): transforms on the shim datasets' images (uint8 arrays or tensors)."""
import numpy as np
import torch
import torch.nn.functional as F


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToTensor:
    def __call__(self, x):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
            x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
            return x.float().div(255)
        return x


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __call__(self, x):
        return (x - self.mean) / self.std


class Resize:
    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        x = ToTensor()(x)
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


class CenterCrop:
    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        x = ToTensor()(x)
        h, w = x.shape[-2:]
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top:top + self.size, left:left + self.size]
