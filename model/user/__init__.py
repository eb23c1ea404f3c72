"""User space on the golden kernel: glibc's malloc, the workload language, procps' free/top/vmstat,
and the named reports.
"""
