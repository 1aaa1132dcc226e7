"""The paper's experiments, one module each (``table1``; scaling, context length,
tokenization and generation follow in later work)."""
