"""A target domain: class names (with optional synonyms) and prompt templates, built in or from files.

The readers are the vendored contract's (`_domainfiles.py`, from vendor/domainfiles.py), shared with
react-eval, so a class, template or synonym file means the same thing in both. Built-in sets (`domains.json`,
see vendor/make_domains.py): templates `openai_imagenet` (80), `simple_imagenet` (7) and one set per
CLIP_benchmark / ELEVATER dataset (`pets`, `food101`, …); class names `imagenet1k` (the 1,000 OpenAI names),
`coco80` and one set per CLIP_benchmark / ELEVATER dataset.
"""

from ._domainfiles import (
                           DomainError,
                           TargetClass,
                           builtin,
                           load_classes,
                           load_synonyms,
                           load_templates,
                           prompt_classes,
                           prompts,
                           read_entries,
                           with_synonyms,
)

__all__ = ["DomainError", "TargetClass", "builtin", "load_classes", "load_synonyms", "load_templates", "prompt_classes",
           "prompts",
           "read_entries", "with_synonyms"]
