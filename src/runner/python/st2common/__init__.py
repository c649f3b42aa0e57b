"""packd's StackStorm compatibility shim: the part of ``st2common`` that pack code imports.

Only the public surface packs use is provided (see packd's reference/stackstorm.md section 4);
everything talks to the packd agent instead of StackStorm's services.
"""

__version__ = "3.9.0"
