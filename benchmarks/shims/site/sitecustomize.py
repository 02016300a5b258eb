"""TEST SHIM (gradlint benchmarks): no downloads, and single-GPU scripts on a CPU-only machine.

What it does depends on the environment the benchmark sets for a case:
- always: transformers' `AutoTokenizer.from_pretrained` / `AutoModelForSequenceClassification.from_pretrained`
  build a tiny BERT and a tokenizer over the shim data set's words, instead of downloading `bert-base-cased`
  (patched when transformers' auto modules are imported; nothing happens for scripts that never import them);
- GRADLINT_SHIM_CPU_ONLY: without CUDA, `Module.to(0)` / `Tensor.to("cuda")` stay on the CPU; for the
  distributed scripts, `torch.cuda.set_device` does nothing, `Tensor.pin_memory` returns the tensor,
  `init_process_group(backend="nccl")` takes gloo, and `DistributedDataParallel(module, device_ids=[i])`
  of a CPU module drops the device ids (what DDP wants on CPU);
- GRADLINT_SHIM_CPU_DEVICES=N (with CPU_ONLY): `torch.cuda.device_count()` is N, for a script that starts
  one worker per GPU (`mp.spawn(main, nprocs=torch.cuda.device_count())`);
- GRADLINT_SHIM_PICKLED_DATA: `torch.load` of a generated numpy data file unpickles it (torch >= 2.6 loads
  with `weights_only=True` by default, which refuses numpy arrays).
"""
import importlib.abc
import importlib.util
import os
import sys

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(200)]


def _tokenizer_auto(module):
    def from_pretrained(*args, **kwargs):
        import transformers

        return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})

    module.AutoTokenizer.from_pretrained = staticmethod(from_pretrained)


def _modeling_auto(module):
    def from_pretrained(*args, **kwargs):
        import transformers

        config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
        return transformers.BertForSequenceClassification(config)

    module.AutoModelForSequenceClassification.from_pretrained = staticmethod(from_pretrained)


PATCHES = {"transformers.models.auto.tokenization_auto": _tokenizer_auto,
           "transformers.models.auto.modeling_auto": _modeling_auto}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patch a module right after it is executed."""

    looking = set()

    def find_spec(self, name, path=None, target=None):
        patch = PATCHES.get(name)
        if patch is None or name in self.looking:
            return None
        self.looking.add(name)
        try:
            return self._find(name, path, target, patch)
        finally:
            self.looking.discard(name)

    def _find(self, name, path, target, patch):
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                break
        else:
            return None
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _cpu_only():
    import torch

    if torch.cuda.is_available():
        return

    def on_cpu(device):
        if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")):
            return "cpu"
        if isinstance(device, torch.device) and device.type == "cuda":
            return torch.device("cpu")
        return device

    module_to, tensor_to = torch.nn.Module.to, torch.Tensor.to

    def module_to_cpu(self, *args, **kwargs):
        return module_to(self, *[on_cpu(a) for a in args[:1]], *args[1:], **kwargs)

    def tensor_to_cpu(self, *args, **kwargs):
        return tensor_to(self, *[on_cpu(a) for a in args[:1]], *args[1:], **kwargs)

    torch.nn.Module.to, torch.Tensor.to = module_to_cpu, tensor_to_cpu
    torch.cuda.set_device = lambda device: None
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    if os.environ.get("GRADLINT_SHIM_CPU_DEVICES"):
        count = int(os.environ["GRADLINT_SHIM_CPU_DEVICES"])
        torch.cuda.device_count = lambda: count
    _distributed_on_cpu(torch)


def _distributed_on_cpu(torch):
    import torch.distributed as dist
    from torch.distributed import distributed_c10d
    from torch.nn import parallel

    init = distributed_c10d.init_process_group

    def init_process_group(backend=None, *args, **kwargs):
        if backend == "nccl":
            backend = "gloo"
        return init(backend, *args, **kwargs)

    dist.init_process_group = distributed_c10d.init_process_group = init_process_group
    ddp_init = parallel.DistributedDataParallel.__init__

    def ddp_on_cpu(self, module, device_ids=None, output_device=None, *args, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        ddp_init(self, module, device_ids, output_device, *args, **kwargs)

    parallel.DistributedDataParallel.__init__ = ddp_on_cpu


def _pickled_data():
    import torch

    load = torch.load

    def load_pickle(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return load(*args, **kwargs)

    torch.load = load_pickle


sys.meta_path.insert(0, _AfterImport())
if os.environ.get("GRADLINT_SHIM_CPU_ONLY"):
    _cpu_only()
if os.environ.get("GRADLINT_SHIM_PICKLED_DATA"):
    _pickled_data()
