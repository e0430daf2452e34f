"""Pure decision logic: which script each agent runs, and the statistics behind it.

No I/O here: the controller reads the declared objects and the registry's counts, calls
these functions, and writes what they return to status, the registry and ConfigMaps.
"""
