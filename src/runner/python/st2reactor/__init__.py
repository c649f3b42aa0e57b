"""packd's StackStorm compatibility shim for ``st2reactor`` (sensor base classes)."""
