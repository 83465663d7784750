"""Developer tools that write the shipped assets. Run them from the repository root as modules,
e.g. ``python -m tools.assemble_descriptions --check``."""
