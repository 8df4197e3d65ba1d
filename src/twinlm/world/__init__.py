"""The built-in synthetic world: a deterministic population whose facts every task can check."""
