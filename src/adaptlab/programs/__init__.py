"""LM programs (DSPy) on adaptlab-served models: the provider, the adapter, the tasks.

Needs the `programs` extra (DSPy, bm25s): `pip install 'adaptlab[programs]'`.

- `provider.AdaptlabProvider`: a `dspy.Provider` whose LMs adaptlab's OpenAI-compatible server
  answers and whose `finetune` is adaptlab's LoRA trainer (new adapters are served by name);
- `adapter.FieldAdapter`: `Field: value` prompts and parsing, which small models follow;
- `retrieve.BM25Retriever`, `tasks.TASKS`: the study's tasks (multi-hop QA with retrieval,
  arithmetic word problems with chain of thought, Iris).

`import adaptlab.programs` is light; the submodules import DSPy.
"""
from __future__ import annotations

import os

# litellm (under DSPy) fetches a model price list from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
