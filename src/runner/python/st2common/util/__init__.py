"""``st2common.util``: the small utility modules pack code imports (packd shim)."""
