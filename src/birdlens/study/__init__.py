"""The whole study in one command: a config, a cached stage runner, and one self-contained HTML report."""
