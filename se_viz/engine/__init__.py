"""The only package in se_viz that imports paddle, paddle2onnx or onnxruntime.

    attention.py   the attention blocks: SE (configured like timm's SEModule), ECA, gates
    networks/   one module per family; each network lists its attention blocks (info.blocks)
    model.py    a built network seen through that list (attention_layers, se_blocks)
    weights.py  strict, safe reading of weight files; key maps between layouts
    download.py fetching the pretrained files into the cache
    build.py    build_model, verify_weights
    se_weights.py  SE-only files of `se-viz refit`: the SE blocks at another r
    finetune.py the SE blocks trained end to end by distillation (refit --finetune)
    hooks.py    the gate recorder (eager capture, interventions, symbolic for tracing)
    traced.py   the same recorder traced once: the fast engine on ONNX Runtime
    capture.py  capture(): either engine behind one call
    costs.py    parameters and multiply-adds, counted from the built model
    runtime.py  CPU threads, eager mode across threads
    compat.py   every Paddle private attribute se_viz reads, with the versions it was
                checked on (a Paddle upgrade breaks here, loudly)
    torchfile.py  PyTorch .pth files read without torch (arrays only, nothing runs)

Importing it lets Paddle use every core (``$SE_VIZ_THREADS`` overrides that).
"""

from __future__ import annotations

from .runtime import set_cpu_threads

set_cpu_threads()
