"""What the method reads and what is cached on disk between runs.

- `digits`: the real digits (scikit-learn's 8x8 digits at 32x32) and their prompts;
- `prompts`: which prompts a run evaluates on;
- `prompt_cache`: prompt embeddings, each prompt encoded once per process;
- `disk_cache`: artefacts built on first use (teachers, the digits classifier, teacher references);
- `cache_keys`: every cache key, from what the cached thing depends on;
- `atomic`: files written whole or not at all (beside themselves, then renamed);
- `yaml_files`: reading user-written YAML strictly and within bounds.
"""
