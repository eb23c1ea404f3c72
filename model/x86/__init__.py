"""x86-64 facts: the paging-entry format, fault error codes, control-port operations, physical memory
and the page tables built in it. The one part of the model `hw/` may import.
"""
