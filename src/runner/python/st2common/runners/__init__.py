"""``st2common.runners``: the Python action base class and its helpers (packd shim)."""
