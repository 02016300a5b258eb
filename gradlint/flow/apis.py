"""What the libraries that training code calls are known to build and do: tables, no logic about a file.

Qualified names are what ``names.ImportTable`` resolves (`nn.Linear` with `from torch import nn` is
`torch.nn.Linear`). A class name of a library is knowledge about that library (`AutoModelForCausalLM`
builds a model, `from_pretrained` returns it in eval mode), not a guess from a user's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# torch.nn classes whose forward depends on the mode (or that hold modules whose forward may).
MODE_DEPENDENT_NN = frozenset({
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "RReLU",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
    "SyncBatchNorm", "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
    "TransformerDecoderLayer",
})
# ... and those that depend on it only when built with a keyword that says so.
MODE_DEPENDENT_WITH = {
    "InstanceNorm1d": "track_running_stats", "InstanceNorm2d": "track_running_stats",
    "InstanceNorm3d": "track_running_stats", "MultiheadAttention": "dropout", "RNN": "dropout", "LSTM": "dropout",
    "GRU": "dropout",
}
CONTAINERS_NN = frozenset({"Sequential", "ModuleList", "ModuleDict"})
# Functions whose call inside a module's code makes its forward depend on the mode.
MODE_DEPENDENT_FUNCTIONS = frozenset({
    "torch.nn.functional.dropout", "torch.nn.functional.dropout1d", "torch.nn.functional.dropout2d",
    "torch.nn.functional.dropout3d", "torch.nn.functional.alpha_dropout", "torch.nn.functional.batch_norm",
    "torch.nn.functional.feature_alpha_dropout", "torch.dropout", "torch.nn.functional.rrelu",
})
WRAPPERS = frozenset({  # module -> a module that runs it (same parameters, same submodule modes)
    "torch.nn.parallel.DistributedDataParallel", "torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
    "torch.compile", "torch.jit.script", "torch.jit.trace", "torch.distributed.fsdp.fully_shard",
    "torch.distributed._composable.fsdp.fully_shard", "copy.deepcopy", "copy.copy",
})
FSDP1 = frozenset({"torch.distributed.fsdp.FullyShardedDataParallel",
                   "torch.distributed.fsdp.fully_sharded_data_parallel.FullyShardedDataParallel"})
MODULE_BASES = re.compile(
    r"^(torch\.nn\.(modules\.\w+\.)?[A-Z]\w*|(lightning\.pytorch|pytorch_lightning|lightning)(\.core)?(\.module)?"
    r"\.LightningModule|transformers\.(modeling_utils\.)?\w*PreTrainedModel|diffusers\.\w*ModelMixin)$")
LIGHTNING_MODULE = re.compile(r"^(lightning\.pytorch|pytorch_lightning|lightning)(\.core)?(\.module)?\.LightningModule$")
OPTIMIZER_BASES = frozenset({"torch.optim.Optimizer", "torch.optim.optimizer.Optimizer"})
# The Trainers whose evaluation loop puts the model in eval mode before calling these hooks.
HF_TRAINERS = re.compile(r"^(transformers\.(trainer\.)?|transformers\.trainer_seq2seq\.|\.(trainer\.)?)(Seq2Seq)?Trainer$")
TRAINER_EVAL_HOOKS = frozenset({"prediction_step"})
# LightningModule hooks that the Trainer runs with the module in eval mode.
LIGHTNING_EVAL_HOOKS = re.compile(
    r"^(validation_step|test_step|predict_step|validation_step_end|test_step_end|validation_epoch_end|"
    r"test_epoch_end|on_(validation|test|predict)_\w+)$")

# nn.Module methods that do not run the forward.
MODULE_API = frozenset({
    "parameters", "named_parameters", "buffers", "named_buffers", "children", "named_children", "modules",
    "named_modules", "state_dict", "load_state_dict", "to", "cuda", "cpu", "xpu", "mps", "half", "float",
    "double", "bfloat16", "type", "train", "eval", "zero_grad", "requires_grad_", "apply", "add_module",
    "register_module", "register_buffer", "register_parameter", "register_forward_hook",
    "register_forward_pre_hook", "register_full_backward_hook", "register_backward_hook", "get_submodule",
    "get_parameter", "get_buffer", "extra_repr", "share_memory", "to_empty", "set_extra_state",
    "get_extra_state", "compile", "save_pretrained", "push_to_hub", "tie_weights", "num_parameters",
    "get_input_embeddings", "get_output_embeddings", "resize_token_embeddings", "no_sync", "join",
    "gradient_checkpointing_enable", "gradient_checkpointing_disable", "clip_grad_norm_", "log", "log_dict",
    "save_hyperparameters", "print", "update", "reset_parameters", "init_weights",
})
# Methods of library models that run (part of) the forward.
FORWARD_METHODS = frozenset({
    "forward", "__call__", "generate", "encode", "decode", "encode_image", "encode_text", "get_image_features",
    "get_text_features", "forward_features", "forward_head", "forward_intermediates", "predict", "sample",
    "embed", "embed_query", "embed_documents", "infer", "inference",
})

# Methods only an nn.Module has, among the objects training code holds.
MODULE_ONLY_METHODS = frozenset({
    "parameters", "named_parameters", "modules", "named_modules", "children", "named_children", "buffers",
    "named_buffers", "register_forward_hook", "register_forward_pre_hook", "register_buffer", "apply",
    "requires_grad_", "get_submodule",
})
# Methods a module shares with optimizers, schedulers and scalers: module evidence only on a callable.
MODULE_SHARED_METHODS = frozenset({"state_dict", "load_state_dict", "zero_grad", "to", "cuda", "half", "cpu"})


@dataclass(frozen=True)
class Built:
    """What a library call that builds a model says about it."""

    mode: str  # 'train', 'eval' or 'unknown'
    mode_dependent: Optional[bool] = None  # holds dropout/BatchNorm (None: the call does not say)
    language_model: bool = False  # a transformers language model (causal, seq2seq, masked LM)


# Keywords of model factories (timm, torchvision, transformers) that add dropout or stochastic depth.
_DROPOUT_KEYWORDS = frozenset({"drop_rate", "drop_path_rate", "dropout", "attention_dropout", "hidden_dropout_prob",
                               "attention_probs_dropout_prob", "dropout_rate", "proj_drop_rate", "attn_drop_rate"})
_LANGUAGE_MODEL = re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration|ForSeq2SeqLM|ForMaskedLM|"
                             r"ForPreTraining)$")


def module_factory(qualified: str, keywords: dict) -> Optional[Built]:
    """What a library call builds when it builds a model (`keywords`: name -> its literal number, or None)."""
    parts = qualified.split(".")
    last = parts[-1]
    dropout = any(k in _DROPOUT_KEYWORDS and v for k, v in keywords.items())
    if qualified in ("timm.create_model", "timm.models.create_model", "torchvision.models.get_model"):
        return Built("train", True if dropout else None)
    if qualified.startswith("torchvision.models.") and not last.startswith(("get_", "list_")) and \
            "Weights" not in last and last[:1].isalpha():
        # torchvision's CNNs hold BatchNorm or dropout; its ViTs have neither unless asked for
        return Built("train", True if dropout or not last.startswith("vit_") else None)
    if qualified in ("torch.hub.load", "torch.jit.load", "open_clip.create_model", "open_clip.factory.create_model"):
        return Built("unknown")
    if last in ("from_pretrained", "from_config") and len(parts) >= 2 and \
            parts[0] in ("transformers", "diffusers", "peft", "timm"):
        cls = parts[-2]
        if re.search(r"(Model|For\w+|LMHead\w*|Autoencoder\w*|UNet\w*|ControlNet\w*)$", cls) \
                and not re.search(r"(Pipeline|Scheduler|Tokenizer\w*|Processor|Config|Extractor)$", cls):
            # PreTrainedModel.from_pretrained / ModelMixin.from_pretrained call model.eval(); from_config does not
            return Built("eval" if last == "from_pretrained" else "train", True if dropout else None,
                         language_model=parts[0] == "transformers" and bool(_LANGUAGE_MODEL.search(cls)))
    return None


def module_tuple_factory(qualified: str) -> Optional[int]:
    """Position of the model in the tuple a library call returns (`create_model_and_transforms`)."""
    if qualified in ("open_clip.create_model_and_transforms", "open_clip.create_model_from_pretrained",
                     "open_clip.factory.create_model_and_transforms"):
        return 0
    return None


OPTIMIZER_FACTORIES = re.compile(
    r"^(torch\.optim\.(?!lr_scheduler|swa_utils)[A-Z]\w*|torch\.distributed\.optim\.ZeroRedundancyOptimizer|"
    r"timm\.optim\.(create_optimizer(_v2)?|[A-Z]\w*)|transformers\.(optimization\.)?(AdamW|Adafactor)|"
    r"bitsandbytes\.optim\.\w+|apex\.optimizers\.\w+|deepspeed\.ops\.\w+\.\w+|lion_pytorch\.Lion|"
    r"torch_optimizer\.\w+)$")
SCHEDULER_FACTORIES = re.compile(
    r"^(torch\.optim\.lr_scheduler\.\w+|torch\.optim\.swa_utils\.SWALR|transformers\.(optimization\.)?get_\w+|"
    r"timm\.scheduler\.\w+|diffusers\.optimization\.get_\w+)$")
SCALERS = frozenset({
    "torch.cuda.amp.GradScaler", "torch.amp.GradScaler", "torch.GradScaler", "torch.amp.grad_scaler.GradScaler",
    "torch.cpu.amp.GradScaler", "torch.cuda.amp.grad_scaler.GradScaler",
    "torch.distributed.fsdp.sharded_grad_scaler.ShardedGradScaler",
})
ACCELERATORS = frozenset({"accelerate.Accelerator", "accelerate.accelerator.Accelerator"})
FABRICS = frozenset({"lightning.Fabric", "lightning.fabric.Fabric", "lightning_fabric.Fabric",
                     "lightning.fabric.fabric.Fabric", "lightning_fabric.fabric.Fabric"})
DEEPSPEED_INITIALIZE = frozenset({"deepspeed.initialize"})
DATA_LOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})
# Annotations that say what a parameter holds.
ANNOTATION_KINDS = (
    (re.compile(r"^torch\.optim\.(optimizer\.)?Optimizer$"), "optimizer"),
    (re.compile(r"GradScaler$"), "scaler"),
    (re.compile(r"^accelerate\.(accelerator\.)?Accelerator$"), "accelerator"),
    (re.compile(r"^(lightning|lightning_fabric)(\.fabric)*\.Fabric$"), "fabric"),
)
