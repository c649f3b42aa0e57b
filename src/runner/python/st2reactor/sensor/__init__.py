"""``st2reactor.sensor``: sensor base classes (packd shim)."""
