"""The compiled-PyTorch GPU backend (``backend="torch"``): the only package that compiles with inductor."""
